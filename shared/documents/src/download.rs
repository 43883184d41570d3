//! The recipient list as the operator downloads it: every row and column of the validated
//! file, as uploaded, with each recipient's status appended (`dispatch_status`: the receipt
//! where one came, else the recipient's state; `dispatch_reason`: why it was not sent or
//! not delivered). Written as CSV or XLSX to a temporary file, row by row, so that a large
//! list is not held in memory.

use crate::csvout::CsvFile;
use crate::history::{shipment_error, shipment_state};
use domain::model::Recipient;
use intake::list::{normalise_header, ListReader};
use std::collections::{BTreeMap, HashMap};

/// The columns appended to the list's own.
pub const STATUS_COLUMNS: [&str; 2] = ["dispatch_status", "dispatch_reason"];

/// The formats a list is downloaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

impl From<domain::job::ListFormat> for Format {
    fn from(f: domain::job::ListFormat) -> Format {
        match f {
            domain::job::ListFormat::Csv => Format::Csv,
            domain::job::ListFormat::Xlsx => Format::Xlsx,
        }
    }
}

/// A recipient's status as the download shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub status: String,
    pub reason: String,
}

/// Recipients' statuses by line, looked up as the list is written (lines increasing).
pub trait Statuses {
    fn status(&mut self, line: u64) -> std::io::Result<Option<Status>>;
}

impl Statuses for HashMap<u64, Status> {
    fn status(&mut self, line: u64) -> std::io::Result<Option<Status>> {
        Ok(self.get(&line).cloned())
    }
}

/// Lines per bucket of a [`StatusBook`]: what it holds in memory at once.
pub const STATUS_BUCKET_LINES: u64 = 50_000;

type BucketWriter = csv::Writer<std::io::BufWriter<std::fs::File>>;

/// Statuses of a whole dispatch in bounded memory: added in any order (a page of records
/// at a time), kept on temporary disk in buckets of lines; looked up in line order, one
/// bucket in memory at a time.
pub struct StatusBook {
    dir: tempfile::TempDir,
    bucket_lines: u64,
    writers: BTreeMap<u64, BucketWriter>,
    written: bool,
    loaded: Option<(u64, HashMap<u64, Status>)>,
}

impl StatusBook {
    pub fn new() -> std::io::Result<StatusBook> {
        StatusBook::with_bucket_lines(STATUS_BUCKET_LINES)
    }

    pub fn with_bucket_lines(bucket_lines: u64) -> std::io::Result<StatusBook> {
        Ok(StatusBook {
            dir: tempfile::tempdir()?,
            bucket_lines: bucket_lines.max(1),
            writers: BTreeMap::new(),
            written: false,
            loaded: None,
        })
    }

    fn path(&self, bucket: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("{bucket}.csv"))
    }

    /// Takes one recipient's status.
    pub fn add(&mut self, r: &Recipient) -> std::io::Result<()> {
        let bucket = r.line / self.bucket_lines;
        if !self.writers.contains_key(&bucket) {
            let file = std::fs::File::create(self.path(bucket))?;
            self.writers.insert(
                bucket,
                csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(std::io::BufWriter::with_capacity(16 * 1024, file)),
            );
        }
        if let Some(w) = self.writers.get_mut(&bucket) {
            let line = r.line.to_string();
            w.write_record([
                line.as_str(),
                shipment_state(r),
                shipment_error(r).unwrap_or_default(),
            ])?;
        }
        Ok(())
    }
}

impl Statuses for StatusBook {
    fn status(&mut self, line: u64) -> std::io::Result<Option<Status>> {
        if !self.written {
            for (_, mut w) in std::mem::take(&mut self.writers) {
                w.flush()?;
            }
            self.written = true;
        }
        let bucket = line / self.bucket_lines;
        if self.loaded.as_ref().map(|(b, _)| *b) != Some(bucket) {
            let mut statuses = HashMap::new();
            let path = self.path(bucket);
            if path.exists() {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_path(&path)?;
                for record in reader.records() {
                    let record = record?;
                    let line: u64 = record
                        .get(0)
                        .and_then(|l| l.parse().ok())
                        .ok_or_else(|| std::io::Error::other("a status without its line"))?;
                    statuses.insert(
                        line,
                        Status {
                            status: record.get(1).unwrap_or_default().to_string(),
                            reason: record.get(2).unwrap_or_default().to_string(),
                        },
                    );
                }
            }
            // The bucket before is never asked for again: the list is read in line order.
            self.loaded = Some((bucket, statuses));
        }
        Ok(self
            .loaded
            .as_ref()
            .and_then(|(_, s)| s.get(&line).cloned()))
    }
}

/// The status of every recipient, by its line in the list.
pub fn statuses<'a>(recipients: impl IntoIterator<Item = &'a Recipient>) -> HashMap<u64, Status> {
    recipients
        .into_iter()
        .map(|r| {
            (
                r.line,
                Status {
                    status: shipment_state(r).to_string(),
                    reason: shipment_error(r).unwrap_or_default().to_string(),
                },
            )
        })
        .collect()
}

/// What a download wrote.
#[derive(Debug)]
pub struct Written {
    pub file: tempfile::NamedTempFile,
    pub rows: u64,
    /// Rows of the file without a recorded recipient (the list is not the one validated).
    pub unmatched: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("the list cannot be read again: {0}")]
    Read(String),
    #[error("the download cannot be written: {0}")]
    Write(String),
}

fn write_error(e: impl std::fmt::Display) -> DownloadError {
    DownloadError::Write(e.to_string())
}

/// The header: the list's own, then the status columns (numbered when the list has columns
/// of those names already).
fn header(list: &[String]) -> Vec<String> {
    let taken: std::collections::HashSet<String> =
        list.iter().map(|h| normalise_header(h)).collect();
    let mut out = list.to_vec();
    for name in STATUS_COLUMNS {
        let mut candidate = name.to_string();
        let mut n = 2;
        while taken.contains(&normalise_header(&candidate)) {
            candidate = format!("{name}_{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// Writes the list `reader` reads with the statuses appended. Each row has the list's
/// width: short rows are padded, and cells beyond the header are left out (the validation
/// report names such rows).
pub fn write(
    reader: &mut ListReader,
    statuses: &mut impl Statuses,
    format: Format,
) -> Result<Written, DownloadError> {
    let width = reader.headers().len();
    let header = header(reader.headers());
    let mut sink = Sink::new(format, &header)?;
    let mut rows = 0;
    let mut unmatched = 0;
    while let Some(next) = reader.next_row() {
        let (line, raw) = match &next {
            Ok(row) => (row.line, Some(row)),
            Err(e) => (e.line, None),
        };
        let mut cells: Vec<&str> = Vec::with_capacity(header.len());
        if let Some(row) = raw {
            cells.extend(row.cells().take(width));
        }
        cells.resize(width, "");
        let status = statuses.status(line).map_err(write_error)?;
        match &status {
            Some(s) => {
                cells.push(&s.status);
                cells.push(&s.reason);
            }
            None => {
                unmatched += 1;
                cells.push("");
                cells.push("");
            }
        }
        sink.row(&cells)?;
        rows += 1;
    }
    if let Some(why) = reader.failure() {
        return Err(DownloadError::Read(why.to_string()));
    }
    Ok(Written {
        file: sink.finish()?,
        rows,
        unmatched,
    })
}

enum Sink {
    Csv(Box<CsvFile>),
    Xlsx {
        book: Box<rust_xlsxwriter::Workbook>,
        row: u32,
    },
}

impl Sink {
    fn new(format: Format, header: &[String]) -> Result<Sink, DownloadError> {
        match format {
            Format::Csv => {
                let names: Vec<&str> = header.iter().map(String::as_str).collect();
                Ok(Sink::Csv(Box::new(
                    CsvFile::temporary(&names).map_err(write_error)?,
                )))
            }
            Format::Xlsx => {
                let mut book = Box::new(rust_xlsxwriter::Workbook::new());
                book.set_tempdir(std::env::temp_dir())
                    .map_err(write_error)?;
                let bold = rust_xlsxwriter::Format::new().set_bold();
                let sheet = book
                    .add_worksheet_with_constant_memory()
                    .map_err(write_error)?;
                sheet.set_name("Recipients").map_err(write_error)?;
                for (i, name) in header.iter().enumerate() {
                    let col = u16::try_from(i).map_err(write_error)?;
                    sheet
                        .write_string_with_format(0, col, name, &bold)
                        .map_err(write_error)?;
                }
                Ok(Sink::Xlsx { book, row: 1 })
            }
        }
    }

    fn row(&mut self, cells: &[&str]) -> Result<(), DownloadError> {
        match self {
            Sink::Csv(doc) => doc.row(cells),
            Sink::Xlsx { book, row } => {
                let sheet = book.worksheet_from_index(0).map_err(write_error)?;
                for (i, cell) in cells.iter().enumerate() {
                    if !cell.is_empty() {
                        let col = u16::try_from(i).map_err(write_error)?;
                        sheet.write_string(*row, col, *cell).map_err(write_error)?;
                    }
                }
                *row += 1;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<tempfile::NamedTempFile, DownloadError> {
        match self {
            Sink::Csv(doc) => doc.finish_file().map_err(write_error),
            Sink::Xlsx { mut book, .. } => {
                let file = tempfile::NamedTempFile::new().map_err(write_error)?;
                book.save(file.path()).map_err(write_error)?;
                Ok(file)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::model::{Receipt, RecipientState};

    fn recipient(line: u64, state: RecipientState, reason: Option<&str>) -> Recipient {
        Recipient {
            state,
            reason: reason.map(str::to_string),
            ..Recipient::pending("d", &line.to_string(), line)
        }
    }

    #[test]
    fn a_status_book_on_disk_answers_as_the_statuses_in_memory_do() {
        let mut rs: Vec<Recipient> = (2..40)
            .map(|line| match line % 3 {
                0 => recipient(line, RecipientState::Sent, None),
                1 => recipient(
                    line,
                    RecipientState::Failed,
                    Some("MessageRejected: no, \"quoted\""),
                ),
                _ => recipient(line, RecipientState::Invalid, Some("invalid_email: no @")),
            })
            .collect();
        // Added in any order (a page of a key shard after another), looked up in line order.
        rs.reverse();
        rs.swap(3, 20);
        let mut in_memory = statuses(&rs);
        let mut book = StatusBook::with_bucket_lines(7).unwrap();
        for r in &rs {
            book.add(r).unwrap();
        }
        for line in 0..45 {
            assert_eq!(
                book.status(line).unwrap(),
                in_memory.status(line).unwrap(),
                "line {line}"
            );
        }
        assert_eq!(book.status(4).unwrap().unwrap().status, "failed");
        assert!(book.loaded.as_ref().is_some_and(|(_, s)| s.len() <= 7));
    }

    fn statuses_of_three() -> HashMap<u64, Status> {
        let mut bounced = recipient(3, RecipientState::Sent, None);
        bounced.receipt = Some(Receipt::Bounced);
        bounced.receipt_detail = Some("550 unknown user".into());
        statuses(&[
            recipient(2, RecipientState::Sent, None),
            bounced,
            recipient(4, RecipientState::Invalid, Some("invalid_email: no @")),
        ])
    }

    const LIST: &str = "id,name,email,dispatch_status\n1,Ann,ann@example.net,x\n2,=Bo,bo@example.net\n3,Cy,cy,,extra\n";

    #[test]
    fn the_csv_download_is_the_list_with_a_status_per_row() {
        let mut reader = ListReader::open("list.csv", LIST.as_bytes().to_vec(), None).unwrap();
        let w = write(&mut reader, &mut statuses_of_three(), Format::Csv).unwrap();
        assert_eq!((w.rows, w.unmatched), (3, 0));
        let text = std::fs::read_to_string(w.file.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "id,name,email,dispatch_status,dispatch_status_2,dispatch_reason",
                "1,Ann,ann@example.net,x,sent,",
                "2,'=Bo,bo@example.net,,bounced,550 unknown user",
                "3,Cy,cy,,invalid,invalid_email: no @",
            ]
        );
    }

    #[test]
    fn the_download_keeps_the_header_and_cells_as_uploaded() {
        let list = " id , name ,email\n1,  Ann ,ann@example.net\n   ,  ,\n2,Bo,bo@example.net\n";
        let mut reader = ListReader::open_as(
            "list.csv",
            Box::new(std::io::Cursor::new(list.as_bytes().to_vec())),
            None,
            None,
            intake::list::Cells::AsUploaded,
        )
        .unwrap();
        let mut two = HashMap::new();
        for line in [2, 4] {
            two.insert(
                line,
                Status {
                    status: "sent".into(),
                    reason: String::new(),
                },
            );
        }
        let w = write(&mut reader, &mut two, Format::Csv).unwrap();
        assert_eq!((w.rows, w.unmatched), (2, 0));
        let text = std::fs::read_to_string(w.file.path()).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                " id , name ,email,dispatch_status,dispatch_reason",
                "1,  Ann ,ann@example.net,sent,",
                "2,Bo,bo@example.net,sent,",
            ]
        );
    }

    #[test]
    fn the_xlsx_download_reads_back_with_the_same_rows() {
        let mut reader = ListReader::open("list.csv", LIST.as_bytes().to_vec(), None).unwrap();
        let mut only_two = statuses_of_three();
        only_two.remove(&4);
        let w = write(&mut reader, &mut only_two, Format::Xlsx).unwrap();
        assert_eq!((w.rows, w.unmatched), (3, 1));
        let bytes = std::fs::read(w.file.path()).unwrap();
        let mut back = ListReader::open("download.xlsx", bytes, None).unwrap();
        assert_eq!(
            back.headers(),
            [
                "id",
                "name",
                "email",
                "dispatch_status",
                "dispatch_status_2",
                "dispatch_reason"
            ]
        );
        let mut rows = Vec::new();
        while let Some(r) = back.next_row() {
            rows.push(r.unwrap().cells().map(str::to_string).collect::<Vec<_>>());
        }
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1][1], "=Bo",
            "a workbook cell holds text, not a formula"
        );
        assert_eq!(rows[1][4], "bounced");
        assert_eq!(rows[1][5], "550 unknown user");
        assert!(
            rows[2].iter().skip(4).all(|c| c.is_empty()),
            "{:?}",
            rows[2]
        );
    }
}
