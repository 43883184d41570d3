//! Validation speed and memory: lists of 10,000, 100,000 and 1,000,000 rows with 10 columns,
//! as CSV and as XLSX (written with shared strings, as Excel writes them), each checked row by
//! row the way the validate function does it: reading (streamed), every rule, rendering each
//! valid row's message, the report of problem rows written to a file. DynamoDB writes are not
//! part of it (see the README for storing times).
//!
//! Each measurement runs in a child process of its own, so its peak resident memory (VmHWM)
//! is its own. Beside each XLSX validation, calamine alone reads the same file: its cell
//! reader (streaming, what validation uses) and its worksheet range (loading the sheet).
//!
//! The phone number metadata is loaded before a validation's clock starts, as the validate
//! function loads it at init; the bench prints how long that takes.
//!
//! `cargo bench --bench validation` (or `make bench`). BENCH_ROWS=10000,100000 picks sizes;
//! BENCH_RUNS (default 3) the rounds. "CPU s" is the CPU time of the measured part: a CSV is read and
//! checked on one thread, a workbook is read on a second thread beside the checks.
//! Generated lists are kept in `target/bench-data`.

use domain::manifest::Manifest;
use intake::list::ListReader;
use intake::template::{EmailSource, MessageTemplate, SmsSource, TemplateSource};
use intake::validation::Validator;
use std::path::{Path, PathBuf};
use std::time::Instant;

const CHILD: &str = "VALIDATION_BENCH_CHILD";
const HEADERS: [&str; 10] = [
    "Recipient ID",
    "First Name",
    "Last Name",
    "Email",
    "Mobile",
    "Channel",
    "Town",
    "Status",
    "Consent",
    "Born",
];
const MANIFEST: &str = r#"{
  "title": "Benchmark", "list": "LIST", "channel": "column",
  "columns": {"id": "recipient id", "phone": "mobile"},
  "email": {"from": "Notices <notices@example.org>", "subject": "Your notice, {{ first_name }} {{ last_name }}", "text": "email.txt"},
  "sms": {"text": "sms.txt"},
  "exclusions": {"status_column": "status", "excluded_codes": ["80", "90"], "consent_column": "consent"},
  "phone_region": "DK"
}"#;
const TOWNS: [&str; 6] = ["Århus", "Odense", "Aalborg", "Køge", "Vejle", "København"];

/// One generated row: 80% email, 20% SMS; one row in 50 has a problem or an exclusion.
fn row(i: u64) -> [String; 10] {
    let sms = i % 5 == 4;
    let mut email = format!("person.{i}@example.net");
    let mut status = "01".to_string();
    match i % 50 {
        7 => email = format!("person.{i}@@example"),
        19 => status = "90".into(),
        _ => {}
    }
    [
        format!("{}", 1_000_000_000 + i),
        format!("First{i}"),
        format!("Lästname{}", i % 9973),
        if sms { String::new() } else { email },
        if sms {
            format!("2{:07}", i % 10_000_000)
        } else {
            String::new()
        },
        if sms { "sms".into() } else { "email".into() },
        TOWNS[(i % 6) as usize].into(),
        status,
        if i.is_multiple_of(3) {
            "yes".into()
        } else {
            "ja".into()
        },
        format!("19{:02}-{:02}-{:02}", 40 + i % 60, 1 + i % 12, 1 + i % 28),
    ]
}

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench data folder");
    dir
}

fn csv_list(rows: u64) -> PathBuf {
    let path = data_dir().join(format!("list-{rows}.csv"));
    if !path.exists() {
        let tmp = path.with_extension("part");
        let mut w = csv::Writer::from_path(&tmp).expect("csv");
        w.write_record(HEADERS).expect("header");
        for i in 0..rows {
            w.write_record(row(i)).expect("row");
        }
        w.flush().expect("flush");
        std::fs::rename(tmp, &path).expect("rename");
    }
    path
}

fn xlsx_list(rows: u64) -> PathBuf {
    let path = data_dir().join(format!("list-{rows}.xlsx"));
    if !path.exists() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let ws = book.add_worksheet();
        let date = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd");
        for (c, h) in HEADERS.iter().enumerate() {
            ws.write_string(0, c as u16, *h).expect("header");
        }
        for i in 0..rows {
            let r = row(i);
            let n = (i + 1) as u32;
            // Ids and phone numbers typed as numbers, dates as dates, the rest as text.
            ws.write_number(n, 0, (1_000_000_000 + i) as f64)
                .expect("id");
            for c in [1usize, 2, 3, 5, 6, 7, 8] {
                if !r[c].is_empty() {
                    ws.write_string(n, c as u16, &r[c]).expect("text");
                }
            }
            if !r[4].is_empty() {
                ws.write_number(n, 4, r[4].parse::<f64>().expect("phone"))
                    .expect("phone");
            }
            let d = rust_xlsxwriter::ExcelDateTime::parse_from_str(&r[9]).expect("date");
            ws.write_datetime_with_format(n, 9, &d, &date)
                .expect("date");
        }
        let tmp = path.with_extension("part");
        book.save(&tmp).expect("save");
        std::fs::rename(tmp, &path).expect("rename");
    }
    path
}

/// CPU time (user and system) of this process so far, in seconds, from /proc/self/stat
/// (clock ticks of 1/100 s).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Validates a list as the validate function does, without the store; returns the rows.
fn validate(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let m = Manifest::parse(MANIFEST.replace("LIST", &name).as_bytes()).expect("manifest");
    let t = MessageTemplate::compile(TemplateSource {
        letter: None,
        email: Some(EmailSource {
            from: "Notices <notices@example.org>".into(),
            subject: "Your notice, {{ first_name }} {{ last_name }}".into(),
            text: "Dear {{ first_name }} {{ last_name }},\nthe water in {{ town }} is off on Monday.\n".into(),
            html: Some("<p>Dear {{ first_name }} {{ last_name }},</p><p>the water in {{ town }} is off on Monday.</p>".into()),
            ..Default::default()
        }),
        sms: Some(SmsSource {
            text: "{{ first_name }}: water off in {{ town }} on Monday".into(),
            sender_id: None,
        }),
    })
    .expect("template");
    let file = std::fs::File::open(path).expect("list");
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = ListReader::open_input(&name, Box::new(file), None, None).expect("open");
    let headers = reader.headers().to_vec();
    let mut v = Validator::new("bench", &m, &t, &headers, "DK").expect("header");
    let mut report =
        documents::csvout::CsvFile::temporary(&documents::report::REPORT_COLUMNS).expect("report");
    let (mut rows, mut problems) = (0u64, 0u64);
    loop {
        v.presize(&reader, size, rows, u64::MAX);
        let Some(row) = reader.next_row() else { break };
        rows += 1;
        let checked = match row {
            Ok(r) => v.check(&r),
            Err(e) => v.unreadable(e.line, &e.message),
        };
        for p in &checked.problems {
            problems += 1;
            documents::report::report_line(&mut report, p);
        }
        std::hint::black_box(&checked);
    }
    let file = report.finish_file().expect("report file");
    assert!(problems > 0 && file.path().exists());
    rows
}

/// The list read as validation reads it (rows of text), without any check.
fn read_only(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let file = std::fs::File::open(path).expect("list");
    let mut reader = ListReader::open_input(&name, Box::new(file), None, None).expect("open");
    let mut rows = 0;
    while let Some(row) = reader.next_row() {
        std::hint::black_box(row.expect("row"));
        rows += 1;
    }
    rows
}

/// calamine alone: every cell of the first sheet through the streaming cell reader.
fn calamine_cells(path: &Path) -> u64 {
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(path).expect("workbook");
    let name = book.sheet_names()[0].clone();
    let mut cells = book.worksheet_cells_reader(&name).expect("sheet");
    let mut last = u32::MAX;
    let mut n = 0u64;
    while let Some(cell) = cells.next_cell().expect("cell") {
        let (r, _) = cell.get_position();
        if r != last {
            n += 1;
            last = r;
        }
        std::hint::black_box(cell.get_value());
    }
    n.saturating_sub(1)
}

/// calamine alone: the sheet loaded as a range, then every cell touched.
fn calamine_range(path: &Path) -> u64 {
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(path).expect("workbook");
    let name = book.sheet_names()[0].clone();
    let range = book.worksheet_range(&name).expect("sheet");
    for row in range.rows() {
        std::hint::black_box(row);
    }
    (range.height() as u64).saturating_sub(1)
}

fn child(spec: &str) {
    let (what, path) = spec.split_once(':').expect("what:path");
    let path = Path::new(path);
    if what == "validate" {
        // Done once per process at the validate function's init, as there.
        intake::validation::warm_up();
    }
    let cpu_before = cpu_secs();
    let start = Instant::now();
    let rows = match what {
        "validate" => validate(path),
        "read" => read_only(path),
        "calamine-cells" => calamine_cells(path),
        "calamine-range" => calamine_range(path),
        other => panic!("unknown measurement {other}"),
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{rows} {secs} {} {}",
        peak_rss_kb(),
        cpu_secs() - cpu_before
    );
}

struct Measured {
    rows: u64,
    secs: f64,
    peak_mb: f64,
    cpu_secs: f64,
}

fn measure(what: &str, path: &Path) -> Measured {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD, format!("{what}:{}", path.display()))
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{what} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("result line");
    let mut f = line.split_whitespace();
    let rows = f.next().unwrap().parse().unwrap();
    let secs = f.next().unwrap().parse().unwrap();
    let kb: f64 = f.next().unwrap().parse().unwrap();
    let cpu_secs = f.next().unwrap().parse().unwrap();
    Measured {
        rows,
        secs,
        peak_mb: kb / 1024.0,
        cpu_secs,
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!("\nValidation: 10 columns, 80% email / 20% SMS rows, 1 row in 50 invalid or excluded; one process per run; {runs} rounds, the measurements of a list taking turns; the median run shown, with the fastest and slowest\n");
    let warm = Instant::now();
    intake::validation::warm_up();
    println!(
        "The phone number metadata is loaded once per process, at the validate function's init: {:.3} s here, not part of the times below.\n",
        warm.elapsed().as_secs_f64()
    );
    println!("| list | rows | file MB | what | seconds (median) | fastest–slowest | rows/s | CPU s | peak RSS MB |");
    println!("|------|-----:|--------:|------|--------:|--------:|-------:|------:|------------:|");
    let mut ratios = Vec::new();
    for &rows in &sizes {
        for (kind, path) in [("CSV", csv_list(rows)), ("XLSX", xlsx_list(rows))] {
            let mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
            let mut whats = vec!["validate", "read"];
            if kind == "XLSX" {
                whats.extend(["calamine-cells", "calamine-range"]);
            }
            // Rounds: every measurement once per round, so that a slow spell of the machine
            // falls on all of them alike.
            let mut all: std::collections::BTreeMap<&str, Vec<Measured>> = Default::default();
            for _ in 0..runs {
                for what in &whats {
                    let m = measure(what, &path);
                    assert_eq!(m.rows, rows, "{what} read every row of {}", path.display());
                    all.entry(what).or_default().push(m);
                }
            }
            let mut times = std::collections::BTreeMap::new();
            for what in whats {
                let ms = all.get_mut(what).expect("measured");
                ms.sort_by(|a, b| a.secs.total_cmp(&b.secs));
                let median = &ms[ms.len() / 2];
                let peak = ms.iter().map(|m| m.peak_mb).fold(0.0, f64::max);
                println!(
                    "| {kind} | {rows} | {mb:.1} | {what} | {:.2} | {:.2}–{:.2} | {:.0} | {:.2} | {peak:.0} |",
                    median.secs,
                    ms[0].secs,
                    ms[ms.len() - 1].secs,
                    rows as f64 / median.secs,
                    median.cpu_secs,
                );
                let median = median.secs;
                times.insert(what, median);
            }
            if kind == "XLSX" {
                ratios.push((
                    rows,
                    times["validate"] / times["calamine-cells"],
                    times["validate"] / times["calamine-range"],
                ));
            }
        }
    }
    println!("\n| rows | XLSX validation ÷ calamine cell reader (medians) | ÷ calamine range |");
    println!("|-----:|------:|------:|");
    for (rows, cells, range) in ratios {
        println!("| {rows} | {cells:.2}× | {range:.2}× |");
    }
}
