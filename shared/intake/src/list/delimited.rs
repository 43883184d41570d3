//! CSV lists, read in batches of rows on a thread of their own.

use super::*;

/// CSV records and where they start: the byte offset and line reached, to number rows by
/// the physical line they start on (quoted fields may span lines).
pub(super) struct CsvSource {
    pub(super) reader: csv::Reader<Tap>,
    pub(super) record: csv::StringRecord,
    pub(super) seen_byte: u64,
    pub(super) seen_line: u64,
    /// Columns of the header.
    pub(super) width: usize,
    pub(super) cells: Cells,
}

impl CsvSource {
    pub(super) fn next(&mut self) -> Option<Result<RawRow, RowError>> {
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
                    cells.push_field(self.cells.apply(c));
                }
                Some(Ok(RawRow {
                    line,
                    cells,
                    no_result: Vec::new(),
                }))
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

pub(super) fn open_csv(
    text: Box<dyn Read + Send>,
    cells: Cells,
) -> Result<(Vec<String>, Source), ListError> {
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
        .map(|h| cells.apply(h).to_string())
        .collect::<Vec<_>>();
    if headers.iter().all(|h| h.trim().is_empty()) {
        return Err(ListError::Empty);
    }
    let source = CsvSource {
        reader,
        record: csv::StringRecord::new(),
        seen_byte: 0,
        seen_line: 1,
        width: headers.len(),
        cells,
    };
    Ok((headers, Source::Csv(source)))
}

/// Picks `,`, `;` or tab: whichever occurs most in the header line outside quotes.
pub(super) fn detect_delimiter(body: &[u8]) -> u8 {
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
