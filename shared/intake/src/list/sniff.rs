//! What a list file holds, judged by its first bytes, and the decoding of CSV text.

use super::*;

/// What a file's first bytes say it is, whatever its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// A zip archive: .xlsx, .xlsm, .xlsb or .ods.
    Zip,
    /// An OLE compound file: .xls, or a password-protected (encrypted) .xlsx.
    Compound,
    Pdf,
    /// Bytes that are no text in any encoding a list is written in.
    Binary,
    Text,
}

impl Content {
    pub fn of(head: &[u8]) -> Content {
        const CFB: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Content::Zip
        } else if head.starts_with(&CFB) {
            Content::Compound
        } else if head.starts_with(b"%PDF") {
            Content::Pdf
        } else if encoding_rs::Encoding::for_bom(head).is_some() {
            Content::Text
        } else if head.contains(&0) {
            // UTF-16 without a byte order mark is not accepted: it cannot be told from binary.
            Content::Binary
        } else {
            Content::Text
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Content::Zip => "a zip archive (an .xlsx, .xlsb or .ods workbook)",
            Content::Compound => "an Excel 97-2003 (.xls) or password-protected workbook",
            Content::Pdf => "a PDF document",
            Content::Binary => "binary data, not text",
            Content::Text => "text (CSV)",
        }
    }
}

/// Keeps the text the CSV parser has read since the last row's start, so that the lines
/// between two rows can be counted without holding the whole file.
pub(super) struct Tap {
    pub(super) inner: Box<dyn Read + Send>,
    pub(super) kept: Vec<u8>,
    /// Offset in the text of `kept[0]`.
    pub(super) base: u64,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Tap {
    /// Counts the line feeds in `from..start`, then moves `start` past the line breaks the
    /// parser reports a record as starting on; returns the new start and the count.
    pub(super) fn lines_between(&mut self, from: u64, start: u64) -> (u64, u64) {
        let end = self.base + self.kept.len() as u64;
        let from = from.clamp(self.base, end);
        let mut to = start.clamp(from, end);
        let at = |p: u64| (p - self.base) as usize;
        while to < end && matches!(self.kept[at(to)], b'\r' | b'\n') {
            to += 1;
        }
        // A line ends with LF, CRLF or a lone CR (as old Mac software writes).
        let span = &self.kept[at(from)..at(to)];
        let lines = span
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                **b == b'\n' || (**b == b'\r' && span.get(i + 1).is_none_or(|n| *n != b'\n'))
            })
            .count() as u64;
        // Forget what lies before this row once it is worth the copy.
        let drop = at(to);
        if drop >= 64 * 1024 && drop * 2 >= self.kept.len() {
            self.kept.drain(..drop);
            self.base = to;
        }
        (to, lines)
    }
}

/// What a whole input's bytes are as UTF-8.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Utf8 {
    Valid,
    /// Valid UTF-8 characters beside bytes that are not: text from two sources. It is read
    /// as UTF-8, and the rows with the stray bytes are reported rather than garbled.
    Mixed,
    Invalid,
}

/// Scans the input in chunks.
pub(super) fn scan_utf8(input: &mut dyn Read) -> std::io::Result<Utf8> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut carried, mut invalid, mut multibyte) = (0, false, false);
    loop {
        let n = input.read(&mut buf[carried..])?;
        let filled = carried + n;
        let mut at = 0;
        carried = 0;
        while at < filled {
            match std::str::from_utf8(&buf[at..filled]) {
                Ok(s) => {
                    multibyte |= !s.is_ascii();
                    at = filled;
                }
                Err(e) => {
                    multibyte |= !buf[at..at + e.valid_up_to()].is_ascii();
                    match e.error_len() {
                        Some(bad) => {
                            invalid = true;
                            at += e.valid_up_to() + bad;
                        }
                        // A character cut by the chunk's end is completed by the next
                        // chunk; at the input's end it is a stray byte.
                        None if n > 0 => {
                            let from = at + e.valid_up_to();
                            buf.copy_within(from..filled, 0);
                            carried = filled - from;
                            at = filled;
                        }
                        None => {
                            invalid = true;
                            at = filled;
                        }
                    }
                }
            }
        }
        if n == 0 {
            return Ok(match (invalid, multibyte) {
                (false, _) => Utf8::Valid,
                (true, true) => Utf8::Mixed,
                (true, false) => Utf8::Invalid,
            });
        }
    }
}

/// The CSV input as UTF-8 text, and the encoding it is read in: a byte order mark decides,
/// then a declared encoding, then UTF-8 when the text holds UTF-8 characters, else
/// Windows-1252.
pub(super) fn decode_csv(
    mut input: Box<dyn Input>,
    head: &[u8],
    declared: Option<&'static encoding_rs::Encoding>,
) -> std::io::Result<(Box<dyn Read + Send>, &'static encoding_rs::Encoding)> {
    let encoding = match (encoding_rs::Encoding::for_bom(head), declared) {
        (Some((found, _)), _) => found,
        (None, Some(d)) => d,
        (None, None) => {
            let utf8 = scan_utf8(&mut input)?;
            input.seek(SeekFrom::Start(0))?;
            if utf8 == Utf8::Invalid {
                encoding_rs::WINDOWS_1252
            } else {
                encoding_rs::UTF_8
            }
        }
    };
    // UTF-8 passes through as it is (with its BOM removed), so that a byte that is not
    // UTF-8 fails its row rather than turning into a replacement character.
    let decoder = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding((encoding != encoding_rs::UTF_8).then_some(encoding))
        .bom_override(true)
        .strip_bom(true)
        .utf8_passthru(true)
        .build(std::io::BufReader::with_capacity(64 * 1024, input));
    Ok((Box::new(decoder), encoding))
}

pub(super) fn io_error(e: std::io::Error) -> ListError {
    ListError::Csv(format!("the file cannot be read: {e}"))
}
