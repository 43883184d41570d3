//! CSV documents the system writes (reports, history). A cell that a spreadsheet would read
//! as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is prefixed with
//! `'` so that opening the file in Excel runs nothing. A plain signed number such as the
//! phone number `+4520123456` is left as it is: it cannot run anything.

/// Makes a cell safe to open in a spreadsheet.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('+' | '-') if is_plain_number(&cell[1..]) => cell.into(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn is_plain_number(rest: &str) -> bool {
    rest.chars().any(|c| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '.')
}

/// A CSV document, built in memory or written to a file.
pub struct CsvDoc<W: std::io::Write = Vec<u8>> {
    writer: csv::Writer<W>,
    /// The first write error; a document that could not be written is not finished.
    failed: Option<std::io::Error>,
}

impl CsvDoc {
    pub fn new(headers: &[&str]) -> CsvDoc {
        CsvDoc::to_writer(Vec::new(), headers)
    }

    pub fn finish(self) -> Vec<u8> {
        // Writing to a Vec cannot fail.
        self.writer.into_inner().unwrap_or_default()
    }
}

/// A CSV document written to a temporary file, for documents that may be large.
pub type CsvFile = CsvDoc<std::io::BufWriter<tempfile::NamedTempFile>>;

impl CsvFile {
    pub fn temporary(headers: &[&str]) -> std::io::Result<CsvFile> {
        let file = tempfile::NamedTempFile::new()?;
        Ok(CsvDoc::to_writer(
            std::io::BufWriter::with_capacity(64 * 1024, file),
            headers,
        ))
    }

    /// The finished file, to upload from its path.
    pub fn finish_file(self) -> std::io::Result<tempfile::NamedTempFile> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.writer
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .into_inner()
            .map_err(|e| e.into_error())
    }
}

impl<W: std::io::Write> CsvDoc<W> {
    pub fn to_writer(writer: W, headers: &[&str]) -> CsvDoc<W> {
        let writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(writer);
        let mut doc = CsvDoc {
            writer,
            failed: None,
        };
        doc.row(headers);
        doc
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|c| neutralise(c.as_ref()).into_owned())
            .collect();
        if let Err(e) = self.writer.write_record(&cells) {
            self.failed.get_or_insert(e.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("+4520123456"), "+4520123456");
        assert_eq!(neutralise("-12.5"), "-12.5");
        assert_eq!(neutralise("+1+cmd|' /C calc'!A0"), "'+1+cmd|' /C calc'!A0");
        assert_eq!(neutralise("-"), "'-");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("plain"), "plain");
        assert_eq!(neutralise(""), "");
    }

    #[test]
    fn documents_quote_and_neutralise() {
        let mut d = CsvDoc::new(&["a", "b"]);
        d.row(["x,y", "=1+1"]);
        let text = String::from_utf8(d.finish()).unwrap();
        assert_eq!(text, "a,b\r\n\"x,y\",'=1+1\r\n");
    }
}
