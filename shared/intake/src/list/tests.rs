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
    let mut r = ListReader::open_with("l.csv", latin1, None, encoding_for("iso-8859-1")).unwrap();
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

#[test]
fn tab_separated_text_is_read_whatever_its_delimited_text_name() {
    for name in ["list.tsv", "list.txt", "list.csv", "LIST.TSV"] {
        let mut r = ListReader::open(name, b"id\tname\n1\tAnn\n2\tBo\n".to_vec(), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.headers(), ["id", "name"], "{name}");
        assert_eq!(rows(&mut r).len(), 2, "{name}");
    }
}

#[test]
fn cells_come_trimmed_for_checking_and_as_uploaded_for_giving_back() {
    let csv = b" id , Name \n 1 ,  Ann  \n   ,  \n2,Bo\n".to_vec();
    let mut trimmed = ListReader::open("l.csv", csv.clone(), None).unwrap();
    assert_eq!(trimmed.headers(), ["id", "Name"]);
    assert_eq!(cells(&mut trimmed), [["1", "Ann"], ["2", "Bo"]]);
    let mut kept = ListReader::open_as(
        "l.csv",
        Box::new(Cursor::new(csv)),
        None,
        None,
        Cells::AsUploaded,
    )
    .unwrap();
    assert_eq!(kept.headers(), [" id ", " Name "]);
    let got = rows(&mut kept);
    // A row of spaces is blank either way, so the rows and their lines are the same.
    assert_eq!(got.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(got[0].cells().collect::<Vec<_>>(), [" 1 ", "  Ann  "]);

    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.write_string(0, 0, " id").unwrap();
    ws.write_string(0, 1, "Name ").unwrap();
    ws.write_string(1, 0, "1").unwrap();
    ws.write_string(1, 1, " Ann ").unwrap();
    ws.write_string(2, 1, "   ").unwrap();
    let bytes = book.save_to_buffer().unwrap();
    let mut trimmed = ListReader::open("l.xlsx", bytes.clone(), None).unwrap();
    assert_eq!(trimmed.headers(), ["id", "Name"]);
    assert_eq!(cells(&mut trimmed), [["1", "Ann"]]);
    let mut kept = ListReader::open_as(
        "l.xlsx",
        Box::new(Cursor::new(bytes)),
        None,
        None,
        Cells::AsUploaded,
    )
    .unwrap();
    assert_eq!(kept.headers(), [" id", "Name "]);
    assert_eq!(cells(&mut kept), [["1", " Ann "]]);
}

#[test]
fn a_header_past_its_limits_is_a_file_level_problem() {
    let long = "n".repeat(domain::limits::input::COLUMN_NAME_CHARS + 1);
    assert_eq!(
        ListReader::open("l.csv", format!("id,{long}\n1,x\n").into_bytes(), None).err(),
        Some(ListError::LongHeader {
            column: 2,
            chars: domain::limits::input::COLUMN_NAME_CHARS + 1
        })
    );
    let wide: Vec<String> = (0..=domain::limits::input::COLUMNS)
        .map(|i| format!("c{i}"))
        .collect();
    assert_eq!(
        ListReader::open("l.csv", format!("{}\n", wide.join(",")).into_bytes(), None).err(),
        Some(ListError::TooManyColumns(
            domain::limits::input::COLUMNS + 1
        ))
    );
    let within: Vec<String> = (0..domain::limits::input::COLUMNS)
        .map(|i| format!("c{i}"))
        .collect();
    assert!(ListReader::open(
        "l.csv",
        format!("{}\n1\n", within.join(",")).into_bytes(),
        None
    )
    .is_ok());
}

#[test]
fn a_formula_without_a_saved_result_is_marked_and_its_row_is_not_blank() {
    // As a program that writes formulas without calculating them leaves the cell.
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.write_string(0, 0, "id").unwrap();
    ws.write_string(0, 1, "name").unwrap();
    ws.write_string(1, 0, "1").unwrap();
    ws.write_formula(1, 1, "=UPPER(\"ann\")").unwrap();
    ws.write_formula(2, 1, "=UPPER(\"bo\")").unwrap();
    ws.write_string(3, 0, "3").unwrap();
    ws.write_string(3, 1, "Cy").unwrap();
    let bytes = without_formula_results(book.save_to_buffer().unwrap());
    let mut r = ListReader::open("l.xlsx", bytes, None).unwrap();
    let got = rows(&mut r);
    assert_eq!(got.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(got[0].no_result(), [1]);
    assert_eq!(got[0].cells().collect::<Vec<_>>(), ["1", ""]);
    assert_eq!(
        got[1].no_result(),
        [1],
        "a row of nothing but a formula is not blank"
    );
    assert!(got[2].no_result().is_empty());
}

/// The workbook with the saved result of every formula taken out.
fn without_formula_results(xlsx: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    let mut archive = zip::ZipArchive::new(Cursor::new(xlsx)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let name = file.name().unwrap().to_string();
        let mut body = String::new();
        file.read_to_string(&mut body).unwrap();
        if name.starts_with("xl/worksheets/") {
            body = strip_results(&body);
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(body.as_bytes()).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// A sheet's XML with every `<v>` that follows a formula's `</f>` left out.
fn strip_results(sheet: &str) -> String {
    let mut out = String::new();
    let mut rest = sheet;
    while let Some(at) = rest.find("</f><v>") {
        out.push_str(&rest[..at + 4]);
        let after = &rest[at + 4..];
        let end = after.find("</v>").unwrap() + 4;
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
