//! Reading recipient lists: CSV through the `csv` crate, XLSX/XLSM/XLS/ODS through calamine.
//! Cells come out as the operator typed them: whole numbers without `.0`, dates as ISO dates.
//!
//! CSV text is read in the encoding the package declares; otherwise a byte order mark decides
//! (UTF-8, or UTF-16 as Excel's "Unicode text" writes it), then UTF-8 when the bytes are valid
//! UTF-8, and Windows-1252 (a superset of Latin-1's printable characters, what Excel writes on
//! Western European Windows) when they are not.

use calamine::{Data, Reader};
use std::io::Cursor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Csv,
    Workbook,
}

impl ListFormat {
    /// The format named by a file's extension.
    pub fn from_name(name: &str) -> Option<ListFormat> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" => Some(ListFormat::Csv),
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(ListFormat::Workbook),
            _ => None,
        }
    }
}

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
}

/// One data row with its line (CSV) or row (sheet) number; the header is 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub line: u64,
    pub cells: Vec<String>,
}

/// A row that could not be read, with the line it sits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

enum Source {
    /// The reader, plus the byte offset and line number reached, to number rows by the
    /// physical line they start on (quoted fields may span lines).
    Csv(csv::Reader<Cursor<Vec<u8>>>, u64, u64),
    Sheet {
        range: calamine::Range<Data>,
        next: usize,
    },
}

/// Reads a list row by row after the header.
pub struct ListReader {
    headers: Vec<String>,
    source: Source,
    encoding: Option<&'static encoding_rs::Encoding>,
}

/// The text encoding a label names (WHATWG labels: `utf-8`, `windows-1252`, `latin1`,
/// `iso-8859-1`, `utf-16le` …).
pub fn encoding_for(label: &str) -> Option<&'static encoding_rs::Encoding> {
    encoding_rs::Encoding::for_label(label.trim().as_bytes())
}

/// CSV bytes as UTF-8 text, and the encoding they were read in.
fn decode_csv(
    bytes: Vec<u8>,
    declared: Option<&'static encoding_rs::Encoding>,
) -> (Vec<u8>, &'static encoding_rs::Encoding) {
    let (encoding, bom) = match (declared, encoding_rs::Encoding::for_bom(&bytes)) {
        (_, Some((found, len))) => (found, len),
        (Some(d), None) => (d, 0),
        (None, None) if std::str::from_utf8(&bytes).is_ok() => (encoding_rs::UTF_8, 0),
        (None, None) => (encoding_rs::WINDOWS_1252, 0),
    };
    if encoding == encoding_rs::UTF_8 {
        let mut bytes = bytes;
        bytes.drain(..bom);
        return (bytes, encoding);
    }
    let (text, _, _) = encoding.decode(&bytes);
    (text.into_owned().into_bytes(), encoding)
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

    /// Opens a list, reading CSV text in `encoding` when one is declared.
    pub fn open_with(
        name: &str,
        bytes: Vec<u8>,
        sheet: Option<&str>,
        encoding: Option<&'static encoding_rs::Encoding>,
    ) -> Result<ListReader, ListError> {
        if bytes.is_empty() {
            return Err(ListError::Empty);
        }
        let format = ListFormat::from_name(name)
            .ok_or_else(|| ListError::UnknownFormat(name.to_string()))?;
        let (headers, source, encoding) = match format {
            ListFormat::Csv => {
                let (text, encoding) = decode_csv(bytes, encoding);
                let (h, s) = open_csv(text)?;
                (h, s, Some(encoding))
            }
            ListFormat::Workbook => {
                let (h, s) = open_workbook(bytes, sheet)?;
                (h, s, None)
            }
        };
        check_headers(&headers)?;
        Ok(ListReader {
            headers,
            source,
            encoding,
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

    /// The next non-blank data row, or `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<RawRow, RowError>> {
        loop {
            let row = match &mut self.source {
                Source::Csv(reader, seen_byte, seen_line) => {
                    let mut record = csv::StringRecord::new();
                    let result = reader.read_record(&mut record);
                    let start = match &result {
                        Ok(_) => record.position().map(|p| p.byte()),
                        Err(e) => e.position().map(|p| p.byte()),
                    }
                    .unwrap_or(*seen_byte);
                    let body = reader.get_ref().get_ref();
                    let from = (*seen_byte as usize).min(body.len());
                    // The reported start may sit on the previous line's terminator or on
                    // blank lines; the row starts at its first other byte.
                    let mut to = (start as usize).clamp(from, body.len());
                    while to < body.len() && matches!(body[to], b'\r' | b'\n') {
                        to += 1;
                    }
                    *seen_line += body[from..to].iter().filter(|b| **b == b'\n').count() as u64;
                    *seen_byte = to as u64;
                    let line = *seen_line;
                    match result {
                        Ok(false) => return None,
                        Ok(true) => RawRow {
                            line,
                            cells: record.iter().map(|c| c.trim().to_string()).collect(),
                        },
                        Err(e) => {
                            let message = match e.kind() {
                                csv::ErrorKind::Utf8 { .. } => {
                                    "the row is not valid UTF-8 text".to_string()
                                }
                                _ => e.to_string(),
                            };
                            // A broken record cannot be resynchronised reliably in every case;
                            // the reader moves on to the next record, which csv supports.
                            return Some(Err(RowError { line, message }));
                        }
                    }
                }
                Source::Sheet { range, next } => {
                    let height = range.height();
                    if *next >= height {
                        return None;
                    }
                    let idx = *next;
                    *next += 1;
                    let width = range.width();
                    let start_row = range.start().map(|(r, _)| r as u64).unwrap_or(0);
                    let cells = (0..width)
                        .map(|c| range.get((idx, c)).map(cell_text).unwrap_or_default())
                        .collect();
                    RawRow {
                        line: start_row + idx as u64 + 1,
                        cells,
                    }
                }
            };
            if row.cells.iter().all(|c| c.is_empty()) {
                continue;
            }
            return Some(Ok(row));
        }
    }
}

fn open_csv(bytes: Vec<u8>) -> Result<(Vec<String>, Source), ListError> {
    let delimiter = detect_delimiter(&bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(Cursor::new(bytes));
    let headers = reader
        .headers()
        .map_err(|e| ListError::Csv(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect::<Vec<_>>();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(ListError::Empty);
    }
    Ok((headers, Source::Csv(reader, 0, 1)))
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

fn open_workbook(bytes: Vec<u8>, sheet: Option<&str>) -> Result<(Vec<String>, Source), ListError> {
    let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| ListError::Workbook(e.to_string()))?;
    let name = match sheet {
        Some(s) => book
            .sheet_names()
            .into_iter()
            .find(|n| n.trim().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ListError::NoSuchSheet(s.to_string()))?,
        None => book
            .sheet_names()
            .into_iter()
            .next()
            .ok_or_else(|| ListError::Workbook("it has no sheets".into()))?,
    };
    let range = book
        .worksheet_range(&name)
        .map_err(|e| ListError::Workbook(e.to_string()))?;
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

/// Whole numbers print without a fraction or exponent (IDs and phone numbers typed as numbers).
fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e17 {
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
        assert_eq!(got[0].cells, ["1", "Ann", "two\r\nlines"]);
        assert_eq!(got[1].line, 5);
        assert_eq!(got[1].cells, ["2", "Bo", "x"]);
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
            Err(ListError::Workbook(_))
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
            got[0].cells,
            ["0102031234", "4520123456", "1990-03-01", "2.5"]
        );
    }

    fn cells(r: &mut ListReader) -> Vec<Vec<String>> {
        rows(r).into_iter().map(|row| row.cells).collect()
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
