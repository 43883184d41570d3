//! Reading recipient lists: CSV through the `csv` crate, XLSX/XLSM/XLS/ODS through calamine.
//! Cells come out as the operator typed them: whole numbers without `.0`, dates as ISO dates.
//!
//! CSV text is read in the encoding the package declares; otherwise a byte order mark decides
//! (UTF-8, or UTF-16 as Excel's "Unicode text" writes it), then UTF-8 when the bytes are valid
//! UTF-8, and Windows-1252 (a superset of Latin-1's printable characters, what Excel writes on
//! Western European Windows) when they are not.

use calamine::{Data, Reader};
#[cfg(test)]
use domain::manifest::encoding_for;
use domain::manifest::ListFormat;
use std::fmt::Write as _;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::mpsc;

/// A problem with the file as a whole; nothing can be sent from it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("the recipient list is empty")]
    Empty,
    #[error("the recipient list has a header row but no recipients")]
    NoRows,
    #[error("the recipient list '{0}' is neither CSV nor a workbook (.xlsx, .xlsm, .xls, .ods)")]
    UnknownFormat(String),
    #[error("the workbook cannot be read: {0}")]
    Workbook(String),
    #[error("the workbook has no sheet named '{0}'")]
    NoSuchSheet(String),
    #[error("the CSV file cannot be read: {0}")]
    Csv(String),
    #[error("the header row has an empty column name in column {0}")]
    EmptyHeader(usize),
    #[error("the header row names '{0}' more than once")]
    DuplicateHeader(String),
    #[error("'{name}' is named as a recipient list of its kind but holds {found}; save it again in the format its name says")]
    NotWhatItSays { name: String, found: &'static str },
    #[error("the workbook is password-protected (encrypted); save it without a password and upload it again")]
    Encrypted,
}

/// One data row with its line (CSV) or row (sheet) number; the header is 1. The cells are
/// kept in one buffer (a CSV record), so a row costs two allocations however wide it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub line: u64,
    cells: csv::StringRecord,
}

impl RawRow {
    pub fn new<I, S>(line: u64, cells: I) -> RawRow
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut record = csv::StringRecord::new();
        for c in cells {
            record.push_field(c.as_ref());
        }
        RawRow {
            line,
            cells: record,
        }
    }

    /// The cell in column `i` (from 0), if the row has one.
    pub fn cell(&self, i: usize) -> Option<&str> {
        self.cells.get(i)
    }

    pub fn cells(&self) -> impl Iterator<Item = &str> {
        self.cells.iter()
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.iter().all(str::is_empty)
    }
}

/// A row that could not be read, with the line it sits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// Anything a list can be read from: a file on local disk or bytes in memory.
pub trait Input: Read + Seek + Send + 'static {}
impl<T: Read + Seek + Send + 'static> Input for T {}

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

    fn describe(self) -> &'static str {
        match self {
            Content::Zip => "a zip archive (an .xlsx, .xlsb or .ods workbook)",
            Content::Compound => "an Excel 97-2003 (.xls) or password-protected workbook",
            Content::Pdf => "a PDF document",
            Content::Binary => "binary data, not text",
            Content::Text => "text (CSV)",
        }
    }
}

/// The bytes a list's kind is judged by.
const SNIFF_BYTES: usize = 8 * 1024;
/// Rows a workbook's reading thread hands over at a time (few hand-overs: waking a thread is
/// not free).
const ROW_BATCH: usize = 1024;

enum Source {
    Csv(CsvSource),
    /// An .xlsx/.xlsm sheet streamed by a reading thread, cell by cell.
    Streamed {
        rx: mpsc::Receiver<Msg>,
        batch: std::vec::IntoIter<RawRow>,
        ended: bool,
    },
    /// An .xls, .xlsb or .ods sheet, loaded whole (the file size limit bounds it).
    Sheet {
        range: calamine::Range<Data>,
        next: usize,
    },
}

/// CSV records and where they start: the byte offset and line reached, to number rows by
/// the physical line they start on (quoted fields may span lines).
struct CsvSource {
    reader: csv::Reader<Tap>,
    record: csv::StringRecord,
    seen_byte: u64,
    seen_line: u64,
    /// Columns of the header.
    width: usize,
}

/// Keeps the text the CSV parser has read since the last row's start, so that the lines
/// between two rows can be counted without holding the whole file.
struct Tap {
    inner: Box<dyn Read + Send>,
    kept: Vec<u8>,
    /// Offset in the text of `kept[0]`.
    base: u64,
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
    fn lines_between(&mut self, from: u64, start: u64) -> (u64, u64) {
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

/// Messages of a workbook's reading thread.
enum Msg {
    Header {
        headers: Vec<String>,
        declared_rows: u64,
    },
    Rows(Vec<RawRow>),
    /// The sheet has been read to its end.
    End,
    Empty,
    Failed(String),
}

/// Reads a list row by row after the header.
pub struct ListReader {
    headers: Vec<String>,
    source: Source,
    encoding: Option<&'static encoding_rs::Encoding>,
    declared_rows: Option<u64>,
    /// Why the list could not be read to its end, once that has happened.
    failure: Option<String>,
}

fn io_error(e: std::io::Error) -> ListError {
    ListError::Csv(format!("the file cannot be read: {e}"))
}

/// What a whole input's bytes are as UTF-8.
#[derive(Debug, PartialEq, Eq)]
enum Utf8 {
    Valid,
    /// Valid UTF-8 characters beside bytes that are not: text from two sources. It is read
    /// as UTF-8, and the rows with the stray bytes are reported rather than garbled.
    Mixed,
    Invalid,
}

/// Scans the input in chunks.
fn scan_utf8(input: &mut dyn Read) -> std::io::Result<Utf8> {
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
fn decode_csv(
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

/// Header names are matched without regard to case, surrounding spaces, or `_`/`-`/space.
/// The normalised name is also the merge field name in templates.
pub fn normalise_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.trim().chars() {
        if c == '_' || c == '-' || c.is_whitespace() {
            gap = !out.is_empty();
        } else {
            if gap {
                out.push('_');
                gap = false;
            }
            out.extend(c.to_lowercase());
        }
    }
    out
}

impl ListReader {
    /// Opens a list held in memory. `name` gives the format by its extension.
    pub fn open(name: &str, bytes: Vec<u8>, sheet: Option<&str>) -> Result<ListReader, ListError> {
        ListReader::open_with(name, bytes, sheet, None)
    }

    /// Opens a list held in memory, reading CSV text in `encoding` when one is declared.
    pub fn open_with(
        name: &str,
        bytes: Vec<u8>,
        sheet: Option<&str>,
        encoding: Option<&'static encoding_rs::Encoding>,
    ) -> Result<ListReader, ListError> {
        ListReader::open_input(name, Box::new(Cursor::new(bytes)), sheet, encoding)
    }

    /// Opens a list from a file or other seekable input without loading it: CSV and
    /// .xlsx/.xlsm are read as a stream. The first bytes must agree with the name's format.
    pub fn open_input(
        name: &str,
        mut input: Box<dyn Input>,
        sheet: Option<&str>,
        encoding: Option<&'static encoding_rs::Encoding>,
    ) -> Result<ListReader, ListError> {
        let format = ListFormat::from_name(name)
            .ok_or_else(|| ListError::UnknownFormat(name.to_string()))?;
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        (&mut input)
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(io_error)?;
        input.seek(SeekFrom::Start(0)).map_err(io_error)?;
        if head.is_empty() {
            return Err(ListError::Empty);
        }
        let content = Content::of(&head);
        let mismatch = || ListError::NotWhatItSays {
            name: name.to_string(),
            found: content.describe(),
        };
        let (headers, source, encoding, declared_rows) = match (format, content) {
            (ListFormat::Csv, Content::Text) => {
                let (text, encoding) = decode_csv(input, &head, encoding).map_err(io_error)?;
                let (h, s) = open_csv(text)?;
                (h, s, Some(encoding), None)
            }
            (ListFormat::Csv, _) | (ListFormat::Workbook, Content::Text | Content::Pdf) => {
                return Err(mismatch())
            }
            (ListFormat::Workbook, Content::Binary) => {
                return Err(ListError::Workbook(
                    "it is damaged or not a workbook at all (its first bytes are neither a zip archive nor an Excel 97-2003 file)"
                        .into(),
                ))
            }
            (ListFormat::Workbook, Content::Compound) if is_xlsx(name) => {
                // An .xlsx in a compound file is an encrypted one (or not an .xlsx at all).
                let mut bytes = Vec::new();
                input.read_to_end(&mut bytes).map_err(io_error)?;
                let opened: Result<(), ListError> = guarded(|| {
                    match calamine::Xlsx::new(Cursor::new(bytes)) {
                        Err(calamine::XlsxError::Password) => Err(ListError::Encrypted),
                        _ => Err(mismatch()),
                    }
                });
                return Err(opened.err().unwrap_or_else(mismatch));
            }
            (ListFormat::Workbook, Content::Zip) if is_xlsx(name) => {
                let (h, s, rows) = guarded(|| stream_xlsx(input, sheet))?;
                (h, s, None, Some(rows))
            }
            (ListFormat::Workbook, _) => {
                let (h, s) = guarded(|| open_workbook(input, sheet))?;
                (h, s, None, None)
            }
        };
        check_headers(&headers)?;
        Ok(ListReader {
            headers,
            source,
            encoding,
            declared_rows,
            failure: None,
        })
    }

    /// The encoding a CSV list was read in (`None` for workbooks).
    pub fn encoding(&self) -> Option<&'static str> {
        self.encoding.map(|e| e.name())
    }

    /// Header names as written in the file.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Why the list could not be read to its end (a damaged workbook), after `next_row`
    /// has returned `None`. Such a list fails as a whole.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// How far into a CSV list's text the reader has come, in bytes (`None` for workbooks).
    pub fn progress(&self) -> Option<u64> {
        match &self.source {
            Source::Csv(c) => Some(c.seen_byte),
            _ => None,
        }
    }

    /// Data rows an .xlsx sheet declares (its dimension), known before any row is read.
    pub fn declared_rows(&self) -> Option<u64> {
        self.declared_rows
    }

    /// The next non-blank data row, or `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<RawRow, RowError>> {
        loop {
            let row = match &mut self.source {
                Source::Csv(csv) => match csv.next()? {
                    Ok(row) => row,
                    Err(e) => return Some(Err(e)),
                },
                Source::Streamed { rx, batch, ended } => match batch.next() {
                    Some(row) => row,
                    None if *ended => return None,
                    None => match rx.recv() {
                        Ok(Msg::Rows(rows)) => {
                            *batch = rows.into_iter();
                            continue;
                        }
                        Ok(Msg::End | Msg::Empty | Msg::Header { .. }) => {
                            *ended = true;
                            return None;
                        }
                        // The rest of the sheet cannot be read: the list as a whole fails
                        // rather than end early.
                        Ok(Msg::Failed(message)) => {
                            *ended = true;
                            self.failure = Some(message);
                            return None;
                        }
                        Err(_) => {
                            *ended = true;
                            self.failure =
                                Some("reading the workbook stopped before its end".into());
                            return None;
                        }
                    },
                },
                Source::Sheet { range, next } => {
                    let height = range.height();
                    if *next >= height {
                        return None;
                    }
                    let idx = *next;
                    *next += 1;
                    let width = range.width();
                    let start_row = range.start().map(|(r, _)| r as u64).unwrap_or(0);
                    RawRow::new(
                        start_row + idx as u64 + 1,
                        (0..width).map(|c| range.get((idx, c)).map(cell_text).unwrap_or_default()),
                    )
                }
            };
            if row.is_empty() {
                continue;
            }
            return Some(Ok(row));
        }
    }
}

impl CsvSource {
    fn next(&mut self) -> Option<Result<RawRow, RowError>> {
        let result = self.reader.read_record(&mut self.record);
        let start = match &result {
            Ok(_) => self.record.position().map(|p| p.byte()),
            Err(e) => e.position().map(|p| p.byte()),
        }
        .unwrap_or(self.seen_byte);
        let (to, lines) = self.reader.get_mut().lines_between(self.seen_byte, start);
        self.seen_line += lines;
        self.seen_byte = to;
        let line = self.seen_line;
        match result {
            Ok(false) => None,
            // A quote that is never closed makes the rest of the file one value: the
            // record then has a line break in a value and too few values.
            Ok(true)
                if self.record.len() < self.width
                    && self.record.iter().any(|c| c.contains(['\n', '\r'])) =>
            {
                Some(Err(RowError {
                    line,
                    message: "a quote (\") in this row is not closed, so the lines after it were read as one value; close the quote or remove it".into(),
                }))
            }
            Ok(true) => {
                let mut cells = csv::StringRecord::with_capacity(
                    self.record.as_slice().len(),
                    self.record.len(),
                );
                for c in self.record.iter() {
                    cells.push_field(c.trim());
                }
                Some(Ok(RawRow { line, cells }))
            }
            Err(e) => {
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "the row holds characters that are not UTF-8 while the rest of the file is; save the list as CSV UTF-8".to_string(),
                    csv::ErrorKind::Io(io) => format!("the file cannot be read: {io}"),
                    _ => e.to_string(),
                };
                // The reader moves on to the next record after a broken one.
                Some(Err(RowError { line, message }))
            }
        }
    }
}

fn open_csv(text: Box<dyn Read + Send>) -> Result<(Vec<String>, Source), ListError> {
    // The delimiter is judged on the header line, read ahead and then handed on.
    let mut ahead = Vec::with_capacity(SNIFF_BYTES);
    let mut text = text;
    (&mut text)
        .take(64 * 1024)
        .read_to_end(&mut ahead)
        .map_err(io_error)?;
    let delimiter = detect_delimiter(&ahead);
    let tap = Tap {
        inner: Box::new(Cursor::new(ahead).chain(text)),
        kept: Vec::with_capacity(128 * 1024),
        base: 0,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .buffer_capacity(32 * 1024)
        .from_reader(tap);
    let headers = reader
        .headers()
        .map_err(|e| ListError::Csv(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect::<Vec<_>>();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(ListError::Empty);
    }
    let source = CsvSource {
        reader,
        record: csv::StringRecord::new(),
        seen_byte: 0,
        seen_line: 1,
        width: headers.len(),
    };
    Ok((headers, Source::Csv(source)))
}

/// Picks `,`, `;` or tab: whichever occurs most in the header line outside quotes.
fn detect_delimiter(body: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in body {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    [b',', b';', b'\t'][best]
}

fn is_xlsx(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".xlsx") || lower.ends_with(".xlsm")
}

/// Runs a workbook reader on data it may not expect: a panic inside the reader (a damaged
/// file it does not guard against) becomes a file-level error instead of ending the function.
fn guarded<T>(f: impl FnOnce() -> Result<T, ListError>) -> Result<T, ListError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(ListError::Workbook(
            "it is damaged (its structure makes no sense to the reader)".into(),
        ))
    })
}

/// A workbook error in the operator's terms.
fn workbook_error(e: impl std::fmt::Display, password: bool) -> ListError {
    if password {
        ListError::Encrypted
    } else {
        ListError::Workbook(format!("it is damaged or incomplete ({e})"))
    }
}

fn pick_sheet(names: Vec<String>, wanted: Option<&str>) -> Result<String, ListError> {
    match wanted {
        Some(s) => names
            .into_iter()
            .find(|n| n.trim().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ListError::NoSuchSheet(s.to_string())),
        None => names
            .into_iter()
            .next()
            .ok_or_else(|| ListError::Workbook("it has no sheets".into())),
    }
}

/// Opens an .xlsx/.xlsm workbook and streams the sheet's cells from a thread of its own:
/// only the shared strings and a few batches of rows are held in memory.
fn stream_xlsx(
    input: Box<dyn Input>,
    sheet: Option<&str>,
) -> Result<(Vec<String>, Source, u64), ListError> {
    let book: calamine::Xlsx<_> =
        calamine::Xlsx::new(std::io::BufReader::with_capacity(64 * 1024, input)).map_err(|e| {
            let password = matches!(e, calamine::XlsxError::Password);
            workbook_error(e, password)
        })?;
    let name = pick_sheet(book.sheet_names(), sheet)?;
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::Builder::new()
        .name("xlsx-reader".into())
        .spawn(move || read_xlsx_sheet(book, &name, &tx))
        .map_err(|e| ListError::Workbook(format!("it cannot be read now ({e})")))?;
    match rx.recv() {
        Ok(Msg::Header {
            headers,
            declared_rows,
        }) => Ok((
            headers,
            Source::Streamed {
                rx,
                batch: Vec::new().into_iter(),
                ended: false,
            },
            declared_rows,
        )),
        Ok(Msg::Failed(m)) => Err(ListError::Workbook(m)),
        Ok(Msg::Empty | Msg::Rows(_) | Msg::End) => Err(ListError::Empty),
        Err(_) => Err(ListError::Workbook(
            "reading the workbook stopped before its header".into(),
        )),
    }
}

/// Rows of a sheet being put together from its cells: the header row's cells by column until
/// the header is known, then the header's first column and width, and the row being read,
/// built in place as its cells come (in column order, as spreadsheet programs write them).
struct SheetRows<'a> {
    tx: &'a mpsc::SyncSender<Msg>,
    declared_rows: u64,
    header_cells: Vec<(u32, String)>,
    header: Option<(u32, usize)>,
    record: csv::StringRecord,
    scratch: String,
    filled: bool,
    batch: Vec<RawRow>,
}

impl SheetRows<'_> {
    /// Takes one cell of the current row.
    fn cell(&mut self, column: u32, value: &calamine::DataRef<'_>) {
        match self.header {
            None => {
                let text = cell_ref_str(value, &mut self.scratch);
                if !text.is_empty() {
                    self.header_cells.push((column, text.to_string()));
                }
            }
            Some((first, width)) => {
                // Cells outside the header's columns are not part of the list.
                let Some(i) = column
                    .checked_sub(first)
                    .map(|i| i as usize)
                    .filter(|i| *i < width)
                else {
                    return;
                };
                let text = cell_ref_str(value, &mut self.scratch);
                self.filled |= !text.is_empty();
                if i >= self.record.len() {
                    while self.record.len() < i {
                        self.record.push_field("");
                    }
                    self.record.push_field(text);
                } else {
                    // A cell out of column order: the row is put together again.
                    let mut cells: Vec<String> = self.record.iter().map(str::to_string).collect();
                    cells[i] = text.to_string();
                    self.record = cells.iter().collect();
                }
            }
        }
    }

    /// Ends sheet row `row_no`; false when the reader has gone.
    fn end_row(&mut self, row_no: u32) -> bool {
        let Some((_, width)) = self.header else {
            if self.header_cells.is_empty() {
                return true;
            }
            let first = self.header_cells.iter().map(|(c, _)| *c).min().unwrap_or(0);
            let last = self.header_cells.iter().map(|(c, _)| *c).max().unwrap_or(0);
            let mut names = vec![String::new(); (last - first + 1) as usize];
            for (c, text) in self.header_cells.drain(..) {
                names[(c - first) as usize] = text;
            }
            self.header = Some((first, names.len()));
            return self
                .tx
                .send(Msg::Header {
                    headers: names,
                    declared_rows: self.declared_rows,
                })
                .is_ok();
        };
        if !std::mem::take(&mut self.filled) {
            self.record.clear();
            return true;
        }
        // The next row starts with room for one like this.
        let room = self.record.as_slice().len() + 16;
        let mut cells = std::mem::replace(
            &mut self.record,
            csv::StringRecord::with_capacity(room, width),
        );
        while cells.len() < width {
            cells.push_field("");
        }
        self.batch.push(RawRow {
            line: u64::from(row_no) + 1,
            cells,
        });
        self.batch.len() < ROW_BATCH
            || self
                .tx
                .send(Msg::Rows(std::mem::take(&mut self.batch)))
                .is_ok()
    }

    /// The sheet has no more cells.
    fn finish(self) {
        if self.header.is_none() {
            let _ = self.tx.send(Msg::Empty);
        } else if self.tx.send(Msg::Rows(self.batch)).is_ok() {
            let _ = self.tx.send(Msg::End);
        }
    }
}

/// The reading thread: the first non-blank row is the header, and its columns are the
/// list's columns; every later row is cut to them. Stops when the reader hangs up.
fn read_xlsx_sheet<R: Read + Seek>(
    mut book: calamine::Xlsx<R>,
    name: &str,
    tx: &mpsc::SyncSender<Msg>,
) {
    let mut cells = match book.worksheet_cells_reader(name) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Msg::Failed(format!("it is damaged or incomplete ({e})")));
            return;
        }
    };
    let dims = cells.dimensions();
    let mut rows = SheetRows {
        tx,
        declared_rows: u64::from(dims.end.0.saturating_sub(dims.start.0)),
        header_cells: Vec::new(),
        header: None,
        record: csv::StringRecord::new(),
        scratch: String::new(),
        filled: false,
        batch: Vec::with_capacity(ROW_BATCH),
    };
    let mut row_no: Option<u32> = None;
    loop {
        match cells.next_cell() {
            Ok(Some(cell)) => {
                let (r, c) = cell.get_position();
                if row_no != Some(r) {
                    if let Some(prev) = row_no {
                        if !rows.end_row(prev) {
                            return;
                        }
                    }
                    row_no = Some(r);
                }
                rows.cell(c, cell.get_value());
            }
            Ok(None) => {
                if let Some(prev) = row_no {
                    if !rows.end_row(prev) {
                        return;
                    }
                }
                rows.finish();
                return;
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(format!(
                    "the workbook is damaged after row {} ({e})",
                    row_no.map(|r| r + 1).unwrap_or(0)
                )));
                return;
            }
        }
    }
}

fn open_workbook(
    mut input: Box<dyn Input>,
    sheet: Option<&str>,
) -> Result<(Vec<String>, Source), ListError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(io_error)?;
    let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| {
        let password = matches!(
            &e,
            calamine::Error::Xlsx(calamine::XlsxError::Password)
                | calamine::Error::Xls(calamine::XlsError::Password)
                | calamine::Error::Xlsb(calamine::XlsbError::Password)
                | calamine::Error::Ods(calamine::OdsError::Password)
        );
        workbook_error(e, password)
    })?;
    let name = pick_sheet(book.sheet_names(), sheet)?;
    let range = book.worksheet_range(&name).map_err(|e| {
        let password = e.to_string().contains("password");
        workbook_error(e, password)
    })?;
    if range.is_empty() {
        return Err(ListError::Empty);
    }
    let headers = (0..range.width())
        .map(|c| range.get((0, c)).map(cell_text).unwrap_or_default())
        .collect::<Vec<_>>();
    Ok((headers, Source::Sheet { range, next: 1 }))
}

fn check_headers(headers: &[String]) -> Result<(), ListError> {
    let mut seen = std::collections::HashSet::new();
    // Trailing empty header cells (formatting left over in spreadsheets) are tolerated.
    let last = headers.iter().rposition(|h| !h.is_empty()).unwrap_or(0);
    for (i, h) in headers.iter().enumerate().take(last + 1) {
        if h.is_empty() {
            return Err(ListError::EmptyHeader(i + 1));
        }
        if !seen.insert(normalise_header(h)) {
            return Err(ListError::DuplicateHeader(h.clone()));
        }
    }
    Ok(())
}

/// A list's header and its rows (or why a row could not be read).
pub type ReadAll = (Vec<String>, Vec<Result<RawRow, RowError>>);

/// Reads a whole list held in memory, every row or row error, at most `max_rows` of them:
/// what the fuzz target and the nasty-file corpus exercise.
pub fn read_all(name: &str, bytes: Vec<u8>, max_rows: usize) -> Result<ReadAll, ListError> {
    let mut reader = ListReader::open(name, bytes, None)?;
    let headers = reader.headers().to_vec();
    let rows = std::iter::from_fn(|| reader.next_row())
        .take(max_rows)
        .collect();
    match reader.failure() {
        Some(why) => Err(ListError::Workbook(why.to_string())),
        None => Ok((headers, rows)),
    }
}

/// A cell as text the way the operator sees it in the spreadsheet.
pub fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_string(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => float_text(*f),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(d) if d.time() == chrono::NaiveTime::MIN => {
                d.date().format("%Y-%m-%d").to_string()
            }
            Some(d) => d.format("%Y-%m-%dT%H:%M:%S").to_string(),
            None => float_text(dt.as_f64()),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// A streamed cell as text: strings trimmed straight from the reader's buffer, other values
/// written to `scratch` as [`cell_text`] writes them (whole numbers and dates without going
/// through a new string).
fn cell_ref_str<'a>(cell: &'a calamine::DataRef<'_>, scratch: &'a mut String) -> &'a str {
    use chrono::Datelike;
    scratch.clear();
    match cell {
        calamine::DataRef::SharedString(s) => return s.trim(),
        calamine::DataRef::String(s) => return s.trim(),
        calamine::DataRef::Empty => {}
        calamine::DataRef::Float(f) if whole(*f) => {
            let _ = write!(scratch, "{}", *f as i64);
        }
        calamine::DataRef::Int(i) => {
            let _ = write!(scratch, "{i}");
        }
        calamine::DataRef::DateTime(dt) => match dt.as_datetime() {
            Some(d) if d.time() == chrono::NaiveTime::MIN && (1000..=9999).contains(&d.year()) => {
                let _ = write!(scratch, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
            }
            _ => scratch.push_str(&cell_text(&Data::from(cell.clone()))),
        },
        other => scratch.push_str(&cell_text(&Data::from(other.clone()))),
    }
    scratch
}

fn whole(f: f64) -> bool {
    f.is_finite() && f.fract() == 0.0 && f.abs() < 1e17
}

/// Whole numbers print without a fraction or exponent (IDs and phone numbers typed as numbers).
fn float_text(f: f64) -> String {
    if whole(f) {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &mut ListReader) -> Vec<RawRow> {
        std::iter::from_fn(|| r.next_row())
            .map(|x| x.unwrap())
            .collect()
    }

    #[test]
    fn header_names_match_loosely() {
        assert_eq!(normalise_header("  First Name "), "first_name");
        assert_eq!(normalise_header("first_name"), "first_name");
        assert_eq!(normalise_header("FIRST-NAME"), "first_name");
        assert_eq!(normalise_header("E-mail"), "e_mail");
    }

    #[test]
    fn reads_csv_with_bom_semicolons_crlf_and_quoted_newlines() {
        let data = "\u{feff}id;Name;note\r\n1;Ann;\"two\r\nlines\"\r\n\r\n2;Bo;x\r\n"
            .as_bytes()
            .to_vec();
        let mut r = ListReader::open("list.csv", data, None).unwrap();
        assert_eq!(r.headers(), ["id", "Name", "note"]);
        let got = rows(&mut r);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].line, 2);
        assert_eq!(
            got[0].cells().collect::<Vec<_>>(),
            ["1", "Ann", "two\r\nlines"]
        );
        assert_eq!(got[1].line, 5);
        assert_eq!(got[1].cells().collect::<Vec<_>>(), ["2", "Bo", "x"]);
    }

    #[test]
    fn line_numbers_hold_across_a_long_streamed_file() {
        // Every 7th row has a value over two lines; rows are read through many buffers.
        let mut text = String::from("id,note\n");
        let mut want = Vec::new();
        let mut line = 2;
        for i in 0..30_000u64 {
            want.push(line);
            if i % 7 == 0 {
                text.push_str(&format!("{i},\"two\nlines\"\n"));
                line += 2;
            } else {
                text.push_str(&format!("{i},one line of text\n"));
                line += 1;
            }
        }
        let mut r = ListReader::open("l.csv", text.into_bytes(), None).unwrap();
        let got: Vec<u64> = rows(&mut r).iter().map(|r| r.line).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_large_sheet_is_streamed_in_order() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let ws = book.add_worksheet();
        ws.write_string(0, 0, "id").unwrap();
        ws.write_string(0, 1, "email").unwrap();
        for i in 1..=2_000u32 {
            ws.write_number(i, 0, f64::from(i)).unwrap();
            if i % 3 != 0 {
                ws.write_string(i, 1, format!("r{i}@example.org")).unwrap();
            }
        }
        let bytes = book.save_to_buffer().unwrap();
        let mut r = ListReader::open("big.xlsx", bytes, None).unwrap();
        assert_eq!(r.declared_rows(), Some(2_000));
        let got = rows(&mut r);
        assert_eq!(got.len(), 2_000);
        assert_eq!(got[2].cells().collect::<Vec<_>>(), ["3", ""]);
        assert_eq!(got[1_999].line, 2_001);
        assert_eq!(
            got[1_999].cells().collect::<Vec<_>>(),
            ["2000", "r2000@example.org"]
        );
    }

    #[test]
    fn detects_tab_and_comma_delimiters() {
        assert_eq!(detect_delimiter(b"a\tb\tc\n1,2\t3"), b'\t');
        assert_eq!(detect_delimiter(b"\"a;b\",c\n"), b',');
        assert_eq!(detect_delimiter(b"single\n"), b',');
    }

    #[test]
    fn file_level_problems_are_named() {
        assert_eq!(
            ListReader::open("a.csv", vec![], None).err(),
            Some(ListError::Empty)
        );
        assert_eq!(
            ListReader::open("a.csv", b"id,E-mail,e mail\n1,a,b\n".to_vec(), None).err(),
            Some(ListError::DuplicateHeader("e mail".into()))
        );
        assert_eq!(
            ListReader::open("a.csv", b"id,,x\n".to_vec(), None).err(),
            Some(ListError::EmptyHeader(2))
        );
        assert!(matches!(
            ListReader::open("a.xlsx", b"id,email\n".to_vec(), None),
            Err(ListError::NotWhatItSays { .. })
        ));
        assert_eq!(
            ListReader::open("a.pdf", b"x".to_vec(), None).err(),
            Some(ListError::UnknownFormat("a.pdf".into()))
        );
    }

    #[test]
    fn reads_xlsx_cells_as_typed() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let ws = book.add_worksheet();
        ws.write_string(0, 0, "CPR").unwrap();
        ws.write_string(0, 1, "Phone").unwrap();
        ws.write_string(0, 2, "Born").unwrap();
        ws.write_string(0, 3, "Score").unwrap();
        ws.write_string(1, 0, "0102031234").unwrap();
        ws.write_number(1, 1, 4520123456.0).unwrap();
        let fmt = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd");
        let date = rust_xlsxwriter::ExcelDateTime::from_ymd(1990, 3, 1).unwrap();
        ws.write_datetime_with_format(1, 2, &date, &fmt).unwrap();
        ws.write_number(1, 3, 2.5).unwrap();
        let bytes = book.save_to_buffer().unwrap();
        let mut r = ListReader::open("l.xlsx", bytes, None).unwrap();
        assert_eq!(r.headers(), ["CPR", "Phone", "Born", "Score"]);
        let got = rows(&mut r);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].line, 2);
        assert_eq!(
            got[0].cells().collect::<Vec<_>>(),
            ["0102031234", "4520123456", "1990-03-01", "2.5"]
        );
    }

    fn cells(r: &mut ListReader) -> Vec<Vec<String>> {
        rows(r)
            .into_iter()
            .map(|row| row.cells().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn csv_from_windows_1252_is_detected_and_read() {
        // "Søren;Århus" as Excel writes it on Danish Windows: ø = 0xF8, Å = 0xC5.
        let bytes = b"id;name;town\r\n1;S\xF8ren;\xC5rhus\r\n".to_vec();
        let mut r = ListReader::open("l.csv", bytes, None).unwrap();
        assert_eq!(r.encoding(), Some("windows-1252"));
        assert_eq!(r.headers(), ["id", "name", "town"]);
        assert_eq!(cells(&mut r), [["1", "Søren", "Århus"]]);
    }

    #[test]
    fn a_declared_encoding_is_taken_and_utf8_is_left_alone() {
        let latin1 = b"id,name\n1,Ren\xE9e\n".to_vec();
        let mut r =
            ListReader::open_with("l.csv", latin1, None, encoding_for("iso-8859-1")).unwrap();
        assert_eq!(cells(&mut r), [["1", "Renée"]]);
        let utf8 = "\u{feff}id,name\n1,Zoë\n".as_bytes().to_vec();
        let mut r = ListReader::open("l.csv", utf8, None).unwrap();
        assert_eq!(r.encoding(), Some("UTF-8"));
        assert_eq!(
            r.headers(),
            ["id", "name"],
            "the byte order mark is not part of the header"
        );
        assert_eq!(cells(&mut r), [["1", "Zoë"]]);
        assert!(encoding_for("klingon").is_none());
    }

    #[test]
    fn csv_in_utf16_with_a_byte_order_mark_is_read() {
        // Excel's "Unicode text": UTF-16LE with a byte order mark, tab-delimited.
        let text = "id\tname\r\n7\tÅse\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            bytes.extend(u.to_le_bytes());
        }
        let mut r = ListReader::open("l.txt", bytes, None).unwrap();
        assert_eq!(r.encoding(), Some("UTF-16LE"));
        assert_eq!(cells(&mut r), [["7", "Åse"]]);
    }
}
