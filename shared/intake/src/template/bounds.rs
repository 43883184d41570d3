//! Bounds on what rendering one message may cost. A template is written once and rendered
//! for every row, inside functions with a deadline and little memory, so a template that runs
//! away must stop with a clear error, not run for hours:
//!
//! - repetition (`*`) is refused when the template is compiled: repeating a list or a text
//!   makes one expression as long as one likes (`[1, 2] * 1000000000`), and a message has no
//!   use for multiplying;
//! - every rendering has [`FUEL`] instructions, which bounds loops and recursion;
//! - a rendered part larger than [`MAX_RENDERED_BYTES`] stops as it is written.

use std::io;

/// Instructions one part's rendering may execute. A message template needs hundreds.
pub const FUEL: u64 = 100_000;

/// Largest rendered part: far above any email body or SMS.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// The reason a template's code is refused, if it is: the first `*` outside a string in a
/// `{{ … }}` or `{% … %}` block (comments and `{% raw %}` text are not code).
pub fn refused_code(source: &str) -> Option<String> {
    let mut rest = source;
    loop {
        let start = rest.find('{')?;
        let after = &rest[start + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => {
                rest = after.find("#}").map_or("", |end| &after[end + 2..]);
                continue;
            }
            _ => {
                rest = after;
                continue;
            }
        };
        let code = &after[1..];
        let (end, repetition) = scan(code, close);
        if repetition {
            return Some(
                "'*' is not allowed in message templates: repeating a text or a list can make \
                 one message as long as one likes"
                    .to_string(),
            );
        }
        let inner = code[..end].trim_matches(['-', '+', ' ', '\t', '\r', '\n']);
        rest = &code[(end + close.len()).min(code.len())..];
        if close == "%}" && inner == "raw" {
            // Raw text runs to `{% endraw %}`, whatever it holds.
            rest = rest.find("endraw").map_or("", |end| &rest[end..]);
        }
    }
}

/// Where a block's code ends (the index of `close`, or the end), and whether it repeats.
fn scan(code: &str, close: &str) -> (usize, bool) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in code.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if code[i..].starts_with(close) {
                    return (i, false);
                }
                match c {
                    '"' | '\'' => quote = Some(c),
                    '*' => return (i, true),
                    _ => {}
                }
            }
        }
    }
    (code.len(), false)
}

/// Rendered text, refused once it grows past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
pub struct Bounded {
    pub text: Vec<u8>,
    pub overflowed: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("the rendered text is too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
