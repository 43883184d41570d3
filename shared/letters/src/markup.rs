//! The light formatting a letter's text may use, read with a CommonMark parser: paragraphs
//! (a blank line between them), a hard line break (a line ending in two spaces or `\`),
//! **bold**, *italic*, and bulleted (`-`, `*`) or numbered (`1.`) lists. Headings are set as
//! bold paragraphs; links keep their text; anything else (images, code, tables, HTML) is
//! refused, so that what an operator sees in the sample is what every recipient gets.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde::Serialize;

/// A run of text with one style, or a line break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub t: String,
    pub b: bool,
    pub i: bool,
    pub br: bool,
}

/// A block of the letter's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Block {
    #[serde(rename = "p")]
    Paragraph { spans: Vec<Span> },
    #[serde(rename = "ul")]
    Bullets { items: Vec<Vec<Span>> },
    #[serde(rename = "ol")]
    Numbered { start: u64, items: Vec<Vec<Span>> },
}

/// Reads a letter's text into blocks, or says what it holds that a letter cannot.
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    // The spans being gathered, and the list being gathered (with its items) if any.
    let mut spans: Vec<Span> = Vec::new();
    let mut list: Option<(Option<u64>, Vec<Vec<Span>>)> = None;
    let (mut bold, mut italic, mut depth) = (0u32, 0u32, 0u32);
    let push_text = |spans: &mut Vec<Span>, t: &str, b: bool, i: bool| {
        if t.is_empty() {
            return;
        }
        match spans.last_mut() {
            Some(last) if !last.br && last.b == b && last.i == i => last.t.push_str(t),
            _ => spans.push(Span {
                t: t.to_string(),
                b,
                i,
                br: false,
            }),
        }
    };
    for event in Parser::new_ext(text, Options::empty()) {
        match event {
            Event::Start(Tag::Paragraph) | Event::End(TagEnd::Paragraph) if list.is_none() => {
                flush(&mut spans, &mut out)
            }
            // Paragraphs inside a list item (a list with blank lines between its items)
            // stay in the item, a line apart.
            Event::End(TagEnd::Paragraph) => spans.push(Span {
                t: String::new(),
                b: false,
                i: false,
                br: true,
            }),
            Event::Start(Tag::Heading { .. }) => {
                flush(&mut spans, &mut out);
                bold += 1;
            }
            Event::End(TagEnd::Heading(_)) => {
                bold = bold.saturating_sub(1);
                flush(&mut spans, &mut out);
            }
            Event::Start(Tag::Strong) => bold += 1,
            Event::End(TagEnd::Strong) => bold = bold.saturating_sub(1),
            Event::Start(Tag::Emphasis) => italic += 1,
            Event::End(TagEnd::Emphasis) => italic = italic.saturating_sub(1),
            Event::Start(Tag::Link { .. }) | Event::End(TagEnd::Link) => {}
            Event::Start(Tag::List(start)) => {
                if depth > 0 {
                    return Err("a list inside a list cannot be set in a letter".into());
                }
                flush(&mut spans, &mut out);
                depth += 1;
                list = Some((start, Vec::new()));
            }
            Event::End(TagEnd::List(_)) => {
                depth = depth.saturating_sub(1);
                if let Some((start, items)) = list.take() {
                    out.push(match start {
                        Some(start) => Block::Numbered { start, items },
                        None => Block::Bullets { items },
                    });
                }
            }
            Event::Start(Tag::Item) => spans.clear(),
            Event::End(TagEnd::Item) => {
                if let Some((_, items)) = list.as_mut() {
                    trim_breaks(&mut spans);
                    items.push(std::mem::take(&mut spans));
                }
            }
            Event::Text(t) => push_text(&mut spans, &t, bold > 0, italic > 0),
            Event::SoftBreak => push_text(&mut spans, " ", bold > 0, italic > 0),
            Event::HardBreak => spans.push(Span {
                t: String::new(),
                b: false,
                i: false,
                br: true,
            }),
            Event::Code(_) | Event::Start(Tag::CodeBlock(_)) => {
                return Err("code cannot be set in a letter".into())
            }
            Event::Start(Tag::Image { .. }) => {
                return Err(
                    "an image in the text cannot be set in a letter (a logo belongs in the layout)"
                        .into(),
                )
            }
            Event::Html(_) | Event::InlineHtml(_) => {
                return Err("HTML cannot be set in a letter; write plain text with Markdown".into())
            }
            Event::Start(Tag::BlockQuote(_)) => {
                return Err("a quotation block cannot be set in a letter".into())
            }
            Event::Rule => flush(&mut spans, &mut out),
            _ => {}
        }
    }
    flush(&mut spans, &mut out);
    Ok(out)
}

fn trim_breaks(spans: &mut Vec<Span>) {
    while spans.last().is_some_and(|s| s.br) {
        spans.pop();
    }
    while spans.first().is_some_and(|s| s.br) {
        spans.remove(0);
    }
}

fn flush(spans: &mut Vec<Span>, out: &mut Vec<Block>) {
    trim_breaks(spans);
    if spans.iter().any(|s| !s.t.trim().is_empty()) {
        out.push(Block::Paragraph {
            spans: std::mem::take(spans),
        });
    }
    spans.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake::template::markdown_literal as escape;

    fn plain(t: &str) -> Span {
        Span {
            t: t.into(),
            b: false,
            i: false,
            br: false,
        }
    }

    #[test]
    fn paragraphs_bold_italic_and_lists() {
        let loose = blocks("- a\n\n- b\n").unwrap();
        assert_eq!(
            loose,
            vec![Block::Bullets {
                items: vec![vec![plain("a")], vec![plain("b")]]
            }]
        );
        let b = blocks("Dear Ann,\n\nYour **new** bin comes on *Monday*.\nBring:\n\n- the old bin\n- its lid\n\n1. first\n2. second\n").unwrap();
        assert_eq!(b.len(), 4, "{b:?}");
        assert_eq!(
            b[0],
            Block::Paragraph {
                spans: vec![plain("Dear Ann,")]
            }
        );
        let Block::Paragraph { spans } = &b[1] else {
            panic!("{b:?}")
        };
        assert_eq!(spans[0], plain("Your "));
        assert!(spans[1].b && spans[1].t == "new");
        assert!(spans[3].i && spans[3].t == "Monday");
        assert_eq!(spans[4].t, ". Bring:");
        assert_eq!(
            b[2],
            Block::Bullets {
                items: vec![vec![plain("the old bin")], vec![plain("its lid")]]
            }
        );
        assert!(matches!(&b[3], Block::Numbered { start: 1, items } if items.len() == 2));
    }

    #[test]
    fn refuses_what_a_letter_cannot_hold() {
        for bad in [
            "see `code`",
            "![logo](x.png)",
            "<b>hi</b>",
            "> quoted",
            "- a\n  - b",
        ] {
            assert!(blocks(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_escaped_value_is_literal_text() {
        let value = "**Bo** _x_ # 1. <b>\n\n- y [z](http://e)";
        let b = blocks(&format!("Hi {}", escape(value))).unwrap();
        assert_eq!(
            b,
            vec![Block::Paragraph {
                spans: vec![plain("Hi **Bo** _x_ # 1. <b>  - y [z](http://e)")]
            }]
        );
    }
}
