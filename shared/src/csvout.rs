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

/// A CSV document built in memory.
pub struct CsvDoc {
    writer: csv::Writer<Vec<u8>>,
}

impl CsvDoc {
    pub fn new(headers: &[&str]) -> CsvDoc {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = writer.write_record(headers);
        CsvDoc { writer }
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
        let _ = self.writer.write_record(&cells);
    }

    pub fn finish(self) -> Vec<u8> {
        self.writer.into_inner().unwrap_or_default()
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
