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

mod cells;
mod delimited;
mod sniff;
mod workbook;

use cells::*;
use delimited::*;
use sniff::*;
use workbook::*;

/// A problem with the file as a whole; nothing can be sent from it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("the recipient list is empty")]
    Empty,
    #[error("the recipient list has a header row but no recipients")]
    NoRows,
    #[error("the recipient list '{0}' is neither delimited text (.csv, .tsv, .txt) nor a workbook (.xlsx, .xlsm, .xls, .ods)")]
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
    #[error("the header row's column {column} has a name of {chars} characters; at most {max} are accepted", max = domain::limits::input::COLUMN_NAME_CHARS)]
    LongHeader { column: usize, chars: usize },
    #[error("the header row has {0} columns; at most {max} are accepted", max = domain::limits::input::COLUMNS)]
    TooManyColumns(usize),
    #[error("'{name}' is named as a recipient list of its kind but holds {found}; save it again in the format its name says")]
    NotWhatItSays { name: String, found: &'static str },
    #[error("the workbook is password-protected (encrypted); save it without a password and upload it again")]
    Encrypted,
}

/// How a list's text cells come out: trimmed of surrounding spaces (what validation judges)
/// or exactly as uploaded (what the download gives back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cells {
    #[default]
    Trimmed,
    AsUploaded,
}

impl Cells {
    pub(crate) fn apply(self, text: &str) -> &str {
        match self {
            Cells::Trimmed => text.trim(),
            Cells::AsUploaded => text,
        }
    }
}

/// One data row with its line (CSV) or row (sheet) number; the header is 1. The cells are
/// kept in one buffer (a CSV record), so a row costs two allocations however wide it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub line: u64,
    cells: csv::StringRecord,
    /// Columns (from 0) whose cell holds a formula with no saved result: the file was
    /// written by a program that does not calculate, so the value is not in it.
    no_result: Vec<usize>,
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
            no_result: Vec::new(),
        }
    }

    /// The row with the columns whose formula has no saved result.
    pub fn with_no_result(mut self, columns: Vec<usize>) -> RawRow {
        self.no_result = columns;
        self
    }

    /// Columns (from 0) whose cell is a formula with no saved result.
    pub fn no_result(&self) -> &[usize] {
        &self.no_result
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

    /// True when every cell is blank (spaces count as blank) and none is a formula.
    pub fn is_empty(&self) -> bool {
        self.no_result.is_empty() && self.cells.iter().all(|c| c.trim().is_empty())
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
    /// An .xls, .xlsb or .ods sheet, loaded whole (the file size limit bounds it), with its
    /// formulas when the reader has them.
    Sheet {
        range: calamine::Range<Data>,
        formulas: Option<calamine::Range<String>>,
        next: usize,
        cells: Cells,
    },
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

    /// Opens the list a manifest names with its header and text cells exactly as uploaded
    /// (not trimmed), for giving the list back.
    pub fn open_listed_as_uploaded(
        manifest: &domain::manifest::Manifest,
        input: Box<dyn Input>,
    ) -> Result<ListReader, ListError> {
        ListReader::open_as(
            &manifest.list,
            input,
            manifest.sheet.as_deref(),
            manifest
                .encoding
                .as_deref()
                .and_then(domain::manifest::encoding_for),
            Cells::AsUploaded,
        )
    }

    /// Opens the list a manifest names (its file name, sheet and declared encoding) from a
    /// file or other seekable input.
    pub fn open_listed(
        manifest: &domain::manifest::Manifest,
        input: Box<dyn Input>,
    ) -> Result<ListReader, ListError> {
        ListReader::open_input(
            &manifest.list,
            input,
            manifest.sheet.as_deref(),
            manifest
                .encoding
                .as_deref()
                .and_then(domain::manifest::encoding_for),
        )
    }

    /// Opens a list from a file or other seekable input without loading it: CSV and
    /// .xlsx/.xlsm are read as a stream. The first bytes must agree with the name's format.
    pub fn open_input(
        name: &str,
        input: Box<dyn Input>,
        sheet: Option<&str>,
        encoding: Option<&'static encoding_rs::Encoding>,
    ) -> Result<ListReader, ListError> {
        ListReader::open_as(name, input, sheet, encoding, Cells::Trimmed)
    }

    /// Opens a list with its text cells trimmed or as uploaded.
    pub fn open_as(
        name: &str,
        mut input: Box<dyn Input>,
        sheet: Option<&str>,
        encoding: Option<&'static encoding_rs::Encoding>,
        cells: Cells,
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
                let (h, s) = open_csv(text, cells)?;
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
                let (h, s, rows) = guarded(|| stream_xlsx(input, sheet, cells))?;
                (h, s, None, Some(rows))
            }
            (ListFormat::Workbook, _) => {
                let (h, s) = guarded(|| open_workbook(input, sheet, cells))?;
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
                Source::Sheet {
                    range,
                    formulas,
                    next,
                    cells,
                } => {
                    let height = range.height();
                    if *next >= height {
                        return None;
                    }
                    let idx = *next;
                    *next += 1;
                    let width = range.width();
                    let (start_row, start_col) = range.start().unwrap_or((0, 0));
                    let row = RawRow::new(
                        u64::from(start_row) + idx as u64 + 1,
                        (0..width).map(|c| {
                            range
                                .get((idx, c))
                                .map(|v| cell_text_as(v, *cells))
                                .unwrap_or_default()
                        }),
                    );
                    let no_result: Vec<usize> = formulas
                        .as_ref()
                        .map(|f| {
                            (0..width)
                                .filter(|&c| {
                                    matches!(range.get((idx, c)), None | Some(Data::Empty))
                                        && f.get_value((
                                            start_row + idx as u32,
                                            start_col + c as u32,
                                        ))
                                        .is_some_and(|text| !text.is_empty())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    row.with_no_result(no_result)
                }
            };
            if row.is_empty() {
                continue;
            }
            return Some(Ok(row));
        }
    }
}

fn check_headers(headers: &[String]) -> Result<(), ListError> {
    let mut seen = std::collections::HashSet::new();
    // Trailing empty header cells (formatting left over in spreadsheets) are tolerated.
    let last = headers
        .iter()
        .rposition(|h| !h.trim().is_empty())
        .unwrap_or(0);
    if last + 1 > domain::limits::input::COLUMNS {
        return Err(ListError::TooManyColumns(last + 1));
    }
    for (i, h) in headers.iter().enumerate().take(last + 1) {
        let chars = h.trim().chars().count();
        if chars > domain::limits::input::COLUMN_NAME_CHARS {
            return Err(ListError::LongHeader {
                column: i + 1,
                chars,
            });
        }
        if h.trim().is_empty() {
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

#[cfg(test)]
mod tests;
