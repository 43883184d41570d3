//! The world a letter is typeset in: the layout as its one source, the letter's data and the
//! logo as its only files, the bundled fonts, and a fixed date.

use crate::{LetterError, Logo, DIN_5008};
use std::sync::OnceLock;
use typst::diag::{FileError, FileResult, SourceDiagnostic};
use typst::foundations::{Bytes, Datetime};
use typst::layout::PagedDocument;
use typst::syntax::{FileId, Source, VirtualPath};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};

/// Loaded once per process: parsing the fonts and building the library take longer than a
/// letter.
struct Shared {
    library: LazyHash<Library>,
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
    main: FileId,
    source: Source,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let fonts: Vec<Font> = typst_assets::fonts()
            .flat_map(|data| Font::iter(Bytes::new(data)))
            .collect();
        let main = FileId::new(None, VirtualPath::new("/main.typ"));
        Shared {
            library: LazyHash::new(Library::builder().build()),
            book: LazyHash::new(FontBook::from_fonts(&fonts)),
            fonts,
            main,
            source: Source::new(main, DIN_5008.to_string()),
        }
    })
}

pub(crate) struct LetterWorld<'a> {
    data: Bytes,
    logo: Option<(&'static str, &'a Logo)>,
    today: time::Date,
}

impl<'a> LetterWorld<'a> {
    pub fn new(data: Vec<u8>, logo: Option<&'a Logo>, today: time::Date) -> LetterWorld<'a> {
        LetterWorld {
            data: Bytes::new(data),
            logo: logo.map(|l| (l.kind.path(), l)),
            today,
        }
    }

    pub fn typeset(&self) -> Result<PagedDocument, LetterError> {
        typst::compile::<PagedDocument>(self)
            .output
            .map_err(|e| LetterError::Typeset(messages(&e)))
    }
}

fn messages(errors: &[SourceDiagnostic]) -> String {
    errors
        .iter()
        .map(|d| d.message.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl World for LetterWorld<'_> {
    fn library(&self) -> &LazyHash<Library> {
        &shared().library
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &shared().book
    }

    fn main(&self) -> FileId {
        shared().main
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        let s = shared();
        if id == s.main {
            Ok(s.source.clone())
        } else {
            Err(FileError::NotFound(id.vpath().as_rootless_path().into()))
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        let path = id.vpath().as_rooted_path();
        if path == std::path::Path::new("/letter.json") {
            return Ok(self.data.clone());
        }
        if let Some((at, logo)) = self.logo {
            if path == std::path::Path::new(at) {
                return Ok(Bytes::new(logo.bytes.clone()));
            }
        }
        Err(FileError::NotFound(id.vpath().as_rootless_path().into()))
    }

    fn font(&self, index: usize) -> Option<Font> {
        shared().fonts.get(index).cloned()
    }

    fn today(&self, _offset: Option<i64>) -> Option<Datetime> {
        Datetime::from_ymd(
            self.today.year(),
            self.today.month() as u8,
            self.today.day(),
        )
    }
}

/// The laid-out letter as PDF/A-2b.
pub(crate) fn pdf(doc: &PagedDocument) -> Result<Vec<u8>, LetterError> {
    use typst_pdf::{PdfOptions, PdfStandard, PdfStandards, Timestamp};
    let standards =
        PdfStandards::new(&[PdfStandard::A_2b]).map_err(|e| LetterError::Pdf(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    let timestamp = Datetime::from_ymd_hms(
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
    )
    .map(Timestamp::new_utc);
    let options = PdfOptions {
        timestamp,
        standards,
        ..PdfOptions::default()
    };
    typst_pdf::pdf(doc, &options).map_err(|e| LetterError::Pdf(messages(&e)))
}
