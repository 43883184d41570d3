//! Letters: one personalised PDF per recipient. The operator's text (light Markdown, merge
//! fields already filled in) is set into the built-in DIN 5008 layout, with the dispatch's
//! letterhead, logo, return address, footer and signature, by Typst used as a library. The
//! fonts are bundled in the binary (Libertinus Serif, which covers Danish, German and the
//! other Latin scripts); no system font is ever looked up. Output is PDF/A-2b, a format for
//! documents that are archived.
//!
//! Everything a letter prints reaches the layout as data (a JSON file the layout reads), so no
//! value, however written, is read as Typst markup.

pub mod markup;
mod world;

use serde::Serialize;
use std::sync::Arc;

pub use markup::{blocks, Block, Span};

/// Letters after which Typst's memory of a layout step no letter used is let go.
const KEEP_FOR_LETTERS: usize = 10;

/// The built-in layout's source.
pub const DIN_5008: &str = include_str!("din5008.typ");

/// Where the address window lies on the page, in millimetres from the top left corner of the
/// A4 sheet (DIN 5008 form B; a DL window envelope shows this area).
pub const ADDRESS_WINDOW_MM: Window = Window {
    left: 20.0,
    top: 45.0,
    width: 85.0,
    height: 45.0,
};

/// At most this many lines are printed in the address zone (name, street lines, postcode
/// and city, country).
pub const ADDRESS_LINES: usize = 6;
/// At most this many characters per address line: what the window's 77 mm of text width
/// holds at 10 pt in the bundled font, with a margin.
pub const ADDRESS_LINE_CHARS: usize = 45;

/// A rectangle on the page, in millimetres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Window {
    pub fn holds(&self, x: f64, y: f64) -> bool {
        x >= self.left
            && x <= self.left + self.width
            && y >= self.top
            && y <= self.top + self.height
    }
}

/// Languages the layout's own words (date, page numbers) are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Da,
    De,
}

impl Lang {
    pub fn parse(code: &str) -> Option<Lang> {
        match code.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "da" => Some(Lang::Da),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Da => "da",
            Lang::De => "de",
        }
    }

    fn labels(self) -> Labels {
        let (date, page, of) = match self {
            Lang::En => ("Date", "Page", "of"),
            Lang::Da => ("Dato", "Side", "af"),
            Lang::De => ("Datum", "Seite", "von"),
        };
        Labels { date, page, of }
    }

    /// A date as a letter writes it: `4 December 2026`, `4. december 2026`, `4. Dezember 2026`.
    pub fn date(self, d: time::Date) -> String {
        const EN: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const DA: [&str; 12] = [
            "januar",
            "februar",
            "marts",
            "april",
            "maj",
            "juni",
            "juli",
            "august",
            "september",
            "oktober",
            "november",
            "december",
        ];
        const DE: [&str; 12] = [
            "Januar",
            "Februar",
            "März",
            "April",
            "Mai",
            "Juni",
            "Juli",
            "August",
            "September",
            "Oktober",
            "November",
            "Dezember",
        ];
        let m = d.month() as usize - 1;
        match self {
            Lang::En => format!("{} {} {}", d.day(), EN[m], d.year()),
            Lang::Da => format!("{}. {} {}", d.day(), DA[m], d.year()),
            Lang::De => format!("{}. {} {}", d.day(), DE[m], d.year()),
        }
    }
}

#[derive(Serialize)]
struct Labels {
    date: &'static str,
    page: &'static str,
    of: &'static str,
}

/// A logo for the letterhead.
#[derive(Debug, Clone)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub kind: LogoKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoKind {
    Png,
    Jpeg,
    Svg,
}

impl LogoKind {
    /// The kind a file name names, by its extension.
    pub fn from_name(name: &str) -> Option<LogoKind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(LogoKind::Png),
            "jpg" | "jpeg" => Some(LogoKind::Jpeg),
            "svg" => Some(LogoKind::Svg),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            LogoKind::Png => "/logo.png",
            LogoKind::Jpeg => "/logo.jpg",
            LogoKind::Svg => "/logo.svg",
        }
    }
}

/// What every letter of a dispatch shares: the organisation's layout.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub lang: Lang,
    /// The sender, as the PDF's author.
    pub sender: String,
    /// The one small line above the address, for returns: `Town Hall · Main St 1 · 1000 City`.
    pub return_address: String,
    /// Lines at the top left of the first page.
    pub letterhead: Vec<String>,
    pub logo: Option<Logo>,
    /// Lines at the foot of every page.
    pub footer: Vec<String>,
    /// Above the signature, e.g. `Kind regards`.
    pub closing: String,
    /// The signature block's lines: name, title.
    pub signature: Vec<String>,
}

/// One recipient's letter.
#[derive(Debug, Clone, Default)]
pub struct Letter {
    /// The address as printed, a line each, at most [`ADDRESS_LINES`].
    pub address: Vec<String>,
    pub subject: String,
    /// The text with its merge fields filled in (each value written as literal Markdown, as
    /// `intake::template::markdown_literal` does).
    pub text: String,
    pub date: Option<time::Date>,
    /// Further lines of the information block under the date: (label, value).
    pub references: Vec<(String, String)>,
}

/// A letter's PDF, or a run's: its pages, and the page each letter of it starts on (from 1).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub pdf: Vec<u8>,
    pub pages: usize,
    pub starts: Vec<usize>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LetterError {
    #[error("the letter's text cannot be set: {0}")]
    Text(String),
    #[error("the letter could not be typeset: {0}")]
    Typeset(String),
    #[error("the letter's PDF could not be written: {0}")]
    Pdf(String),
}

#[derive(Serialize)]
struct Data<'a> {
    lang: &'static str,
    labels: Labels,
    title: &'a str,
    sender: &'a str,
    return_address: &'a str,
    letterhead: &'a [String],
    logo: Option<&'static str>,
    footer: &'a [String],
    closing: &'a str,
    signature: &'a [String],
    letters: Vec<OneLetter<'a>>,
}

#[derive(Serialize)]
struct OneLetter<'a> {
    address: &'a [String],
    subject: &'a str,
    info: Vec<[String; 2]>,
    body: Vec<Block>,
}

/// Renders the letters of one layout. Cheap to share: the fonts and the standard library
/// are loaded once per process, and Typst keeps what it laid out for one letter to reuse for
/// the next.
#[derive(Clone)]
pub struct Renderer {
    layout: Arc<Layout>,
}

impl Renderer {
    pub fn new(layout: Layout) -> Renderer {
        Renderer {
            layout: Arc::new(layout),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The letter laid out, not yet written as PDF.
    pub fn typeset(&self, letter: &Letter) -> Result<typst::layout::PagedDocument, LetterError> {
        self.typeset_run(&letter.subject, std::slice::from_ref(letter))
    }

    /// Letters laid out one after another in one document (a print part), each from a new
    /// page with page numbers of its own.
    pub fn typeset_run(
        &self,
        title: &str,
        letters: &[Letter],
    ) -> Result<typst::layout::PagedDocument, LetterError> {
        let l = &*self.layout;
        let today = time::OffsetDateTime::now_utc().date();
        let date_label = l.lang.labels().date;
        let mut run = Vec::with_capacity(letters.len());
        for letter in letters {
            let mut info = vec![[
                date_label.to_string(),
                l.lang.date(letter.date.unwrap_or(today)),
            ]];
            info.extend(
                letter
                    .references
                    .iter()
                    .map(|(k, v)| [k.clone(), v.clone()]),
            );
            run.push(OneLetter {
                address: &letter.address,
                subject: &letter.subject,
                info,
                body: blocks(&letter.text).map_err(LetterError::Text)?,
            });
        }
        let data = Data {
            lang: l.lang.code(),
            labels: l.lang.labels(),
            title,
            sender: &l.sender,
            return_address: &l.return_address,
            letterhead: &l.letterhead,
            logo: l.logo.as_ref().map(|g| g.kind.path()),
            footer: &l.footer,
            closing: &l.closing,
            signature: &l.signature,
            letters: run,
        };
        let json = serde_json::to_vec(&data).map_err(|e| LetterError::Typeset(e.to_string()))?;
        let date = letters.first().and_then(|l| l.date).unwrap_or(today);
        let world = world::LetterWorld::new(json, l.logo.as_ref(), date);
        let doc = world.typeset();
        // Typst remembers what it laid out, to reuse it for the next letter; what the last
        // few letters did not use is let go, so a process that typesets a million letters
        // holds no more than one that typesets ten.
        typst::comemo::evict(KEEP_FOR_LETTERS);
        doc
    }

    /// The letter as PDF/A-2b.
    pub fn render(&self, letter: &Letter) -> Result<Rendered, LetterError> {
        self.render_run(&letter.subject, std::slice::from_ref(letter))
    }

    /// Letters one after another as one PDF/A-2b document.
    pub fn render_run(&self, title: &str, letters: &[Letter]) -> Result<Rendered, LetterError> {
        let doc = self.typeset_run(title, letters)?;
        let starts = starts(&doc);
        let pdf = world::pdf(&doc)?;
        Ok(Rendered {
            pdf,
            pages: doc.pages.len(),
            starts,
        })
    }
}

/// The page each letter of a laid-out run starts on (from 1), in order.
fn starts(doc: &typst::layout::PagedDocument) -> Vec<usize> {
    use typst::foundations::{Label, Selector};
    let Some(label) = Label::new(typst::utils::PicoStr::intern("letter-start")) else {
        return Vec::new();
    };
    doc.introspector
        .query(&Selector::Label(label))
        .iter()
        .filter_map(|c| c.location())
        .map(|loc| doc.introspector.page(loc).get())
        .collect()
}

/// Every run of text on a laid-out letter with where it starts: page (from 1), millimetres
/// from the left and from the top of the sheet (the baseline).
pub fn texts(doc: &typst::layout::PagedDocument) -> Vec<(usize, f64, f64, String)> {
    use typst::layout::{Frame, FrameItem, Point, Transform};
    fn walk(frame: &Frame, ts: Transform, page: usize, out: &mut Vec<(usize, f64, f64, String)>) {
        for (pos, item) in frame.items() {
            let at = ts.pre_concat(Transform::translate(pos.x, pos.y));
            match item {
                FrameItem::Group(g) => walk(&g.frame, at.pre_concat(g.transform), page, out),
                FrameItem::Text(t) => {
                    let p = Point::zero().transform(at);
                    out.push((page, p.x.to_mm(), p.y.to_mm(), t.text.to_string()));
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (i, page) in doc.pages.iter().enumerate() {
        walk(&page.frame, Transform::identity(), i + 1, &mut out);
    }
    out
}

#[cfg(test)]
mod tests;
