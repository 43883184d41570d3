//! Replays the nasty-file corpus (`tests/corpus/lists`): every file is read without a panic
//! and gives what `tests/corpus/expected.json` says: a file-level error naming the problem,
//! or its rows (count, first row's cells, rows that could not be read).

use serde_json::Value;
use shared::list::read_all;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

fn outcome(name: &str, bytes: Vec<u8>) -> Value {
    match read_all(name, bytes, 100_000) {
        Err(e) => serde_json::json!({"error": e.to_string()}),
        Ok((headers, rows)) => {
            let good: Vec<_> = rows.iter().filter_map(|r| r.as_ref().ok()).collect();
            let bad: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
            serde_json::json!({
                "headers": headers,
                "rows": good.len(),
                "lines": good.iter().map(|r| r.line).collect::<Vec<_>>(),
                "first": good.first().map(|r| r.cells.clone()),
                "row_errors": bad.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
            })
        }
    }
}

#[test]
fn every_nasty_file_gives_its_expected_outcome() {
    let expected: serde_json::Map<String, Value> = serde_json::from_slice(
        &std::fs::read(corpus().join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json is JSON");
    let mut files: Vec<String> = std::fs::read_dir(corpus().join("lists"))
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut wrong = Vec::new();
    for name in &files {
        let bytes = std::fs::read(corpus().join("lists").join(name)).expect("file");
        let got = outcome(name, bytes);
        let Some(want) = expected.get(name) else {
            wrong.push(format!("{name}: no expectation; it gives {got}"));
            continue;
        };
        // Every key the expectation names must match; an error matches by substring.
        for (key, w) in want.as_object().expect("object") {
            let g = &got[key];
            let ok = match (key.as_str(), w, g) {
                ("error", Value::String(w), Value::String(g)) => g.contains(w.as_str()),
                _ => g == w,
            };
            if !ok {
                wrong.push(format!("{name}: {key} is {g}, expected {w}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        expected.len(),
        files.len(),
        "every expectation has its file"
    );
}
