//! Workbook lists (XLSX, XLSM, XLSB, XLS, ODS): XLSX sheets streamed row by row, the others
//! read through calamine.

use super::*;

pub(super) fn is_xlsx(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".xlsx") || lower.ends_with(".xlsm")
}

/// Runs a workbook reader on data it may not expect: a panic inside the reader (a damaged
/// file it does not guard against) becomes a file-level error instead of ending the function.
pub(super) fn guarded<T>(f: impl FnOnce() -> Result<T, ListError>) -> Result<T, ListError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(ListError::Workbook(
            "it is damaged (its structure makes no sense to the reader)".into(),
        ))
    })
}

/// A workbook error in the operator's terms.
pub(super) fn workbook_error(e: impl std::fmt::Display, password: bool) -> ListError {
    if password {
        ListError::Encrypted
    } else {
        ListError::Workbook(format!("it is damaged or incomplete ({e})"))
    }
}

pub(super) fn pick_sheet(names: Vec<String>, wanted: Option<&str>) -> Result<String, ListError> {
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
pub(super) fn stream_xlsx(
    input: Box<dyn Input>,
    sheet: Option<&str>,
    cells: Cells,
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
        .spawn(move || read_xlsx_sheet(book, &name, &tx, cells))
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
pub(super) struct SheetRows<'a> {
    pub(super) tx: &'a mpsc::SyncSender<Msg>,
    pub(super) declared_rows: u64,
    pub(super) header_cells: Vec<(u32, String)>,
    pub(super) header: Option<(u32, usize)>,
    pub(super) record: csv::StringRecord,
    pub(super) scratch: String,
    pub(super) filled: bool,
    /// Columns of the row being read whose formula has no saved result.
    pub(super) no_result: Vec<usize>,
    pub(super) batch: Vec<RawRow>,
    pub(super) cells: Cells,
}

impl SheetRows<'_> {
    /// Takes one cell of the current row; `formula` when the cell holds one.
    pub(super) fn cell(&mut self, column: u32, value: &calamine::DataRef<'_>, formula: bool) {
        match self.header {
            None => {
                let text = cell_ref_str(value, &mut self.scratch, self.cells);
                if !text.trim().is_empty() {
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
                if formula && matches!(value, calamine::DataRef::Empty) {
                    self.no_result.push(i);
                    self.filled = true;
                }
                let text = cell_ref_str(value, &mut self.scratch, self.cells);
                self.filled |= !text.trim().is_empty();
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
    pub(super) fn end_row(&mut self, row_no: u32) -> bool {
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
            no_result: std::mem::take(&mut self.no_result),
        });
        self.batch.len() < ROW_BATCH
            || self
                .tx
                .send(Msg::Rows(std::mem::take(&mut self.batch)))
                .is_ok()
    }

    /// The sheet has no more cells.
    pub(super) fn finish(self) {
        if self.header.is_none() {
            let _ = self.tx.send(Msg::Empty);
        } else if self.tx.send(Msg::Rows(self.batch)).is_ok() {
            let _ = self.tx.send(Msg::End);
        }
    }
}

/// The reading thread: the first non-blank row is the header, and its columns are the
/// list's columns; every later row is cut to them. Stops when the reader hangs up.
pub(super) fn read_xlsx_sheet<R: Read + Seek>(
    mut book: calamine::Xlsx<R>,
    name: &str,
    tx: &mpsc::SyncSender<Msg>,
    text_cells: Cells,
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
        no_result: Vec::new(),
        batch: Vec::with_capacity(ROW_BATCH),
        cells: text_cells,
    };
    let mut row_no: Option<u32> = None;
    loop {
        match cells.next_cell_with_formula_metadata() {
            Ok(Some(cell)) => {
                let (r, c) = cell.pos;
                if row_no != Some(r) {
                    if let Some(prev) = row_no {
                        if !rows.end_row(prev) {
                            return;
                        }
                    }
                    row_no = Some(r);
                }
                rows.cell(c, &cell.value, cell.formula.is_some());
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

pub(super) fn open_workbook(
    mut input: Box<dyn Input>,
    sheet: Option<&str>,
    cells: Cells,
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
    // Formulas are only for telling a formula with no saved result from an empty cell: a
    // sheet whose formulas cannot be read is read without them.
    let formulas = book.worksheet_formula(&name).ok();
    let headers = (0..range.width())
        .map(|c| {
            range
                .get((0, c))
                .map(|v| cell_text_as(v, cells))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>();
    Ok((
        headers,
        Source::Sheet {
            range,
            formulas,
            next: 1,
            cells,
        },
    ))
}
