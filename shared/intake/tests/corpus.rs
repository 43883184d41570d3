//! Replays the nasty-file corpus (`tests/corpus/lists`): every file is read without a panic
//! and gives what `tests/corpus/expected.json` says: a file-level error naming the problem,
//! or its rows (count, first row's cells, rows that could not be read).

use intake::list::read_all;
use serde_json::Value;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
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
                "first": good.first().map(|r| r.cells().collect::<Vec<_>>()),
                "first_no_result": good.first().map(|r| r.no_result().to_vec()),
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

/// Bytes that matter to the readers: quotes, delimiters, line ends, NUL, zip and UTF-8 markers.
const NASTY: &[u8] = b"\"\",;\t\r\n\0PK\x03\x04\xEF\xBB\xBF\xFF\xFE\xC3=+-@<>&";

/// A deterministic mutation of a corpus file: a few bytes flipped, replaced by nasty ones,
/// inserted or cut, or the file cut short.
fn mutate(rng: &mut impl rand::Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if out.is_empty() {
            out.push(NASTY[rng.random_range(0..NASTY.len())]);
            continue;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..5) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = NASTY[rng.random_range(0..NASTY.len())],
            2 => out.insert(at, NASTY[rng.random_range(0..NASTY.len())]),
            3 => {
                out.remove(at);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// What the fuzz target `list` does, on thousands of mutated corpus files: every one gives
/// rows or a file-level error, never a panic. A failing input is saved to
/// `target/corpus-failures/` to be added to the corpus once mended.
#[test]
fn mutated_corpus_files_never_panic() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let dir = corpus().join("lists");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (mut errors, mut read) = (0, 0);
    for name in &names {
        let original = std::fs::read(dir.join(name)).expect("file");
        for i in 0..150 {
            let input = mutate(&mut rng, &original);
            let outcome = std::panic::catch_unwind(|| read_all(name, input.clone(), 10_000));
            match outcome {
                Ok(Ok(_)) => read += 1,
                Ok(Err(e)) => {
                    assert!(!e.to_string().is_empty());
                    errors += 1;
                }
                Err(_) => {
                    let saved =
                        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/corpus-failures");
                    std::fs::create_dir_all(&saved).expect("folder");
                    std::fs::write(saved.join(format!("{i}-{name}")), &input).expect("save");
                    panic!(
                        "mutation {i} of {name} panicked; saved in {}",
                        saved.display()
                    );
                }
            }
        }
    }
    // Both outcomes occur: the mutations reach past the file-level checks.
    assert!(read > 500 && errors > 500, "read {read}, errors {errors}");
}

/// The template corpus (`tests/corpus/templates.json`): what the fuzz target `template`
/// does, on templates that break in known ways. Each used as subject, text, HTML and SMS.
#[test]
fn nasty_templates_give_their_expected_outcome() {
    use intake::template::{
        EmailSource, MessageTemplate, SmsSource, TemplateError, TemplateSource,
    };
    let cases: Vec<Value> = serde_json::from_slice(
        &std::fs::read(corpus().join("templates.json")).expect("templates.json"),
    )
    .expect("JSON");
    let mut wrong = Vec::new();
    for case in &cases {
        let text = case["template"].as_str().expect("template").to_string();
        let values: Vec<String> = case["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|v| v.as_str().expect("text").to_string())
            .collect();
        let source = TemplateSource {
            letter: None,
            email: Some(EmailSource {
                from: "a@example.org".into(),
                subject: text.clone(),
                text: text.clone(),
                html: Some(text.clone()),
                ..Default::default()
            }),
            sms: Some(SmsSource {
                text: text.clone(),
                sender_id: None,
            }),
        };
        let got = match MessageTemplate::compile(source) {
            Err(TemplateError::Syntax { .. }) => "syntax".to_string(),
            Err(e) => format!("compile error {e}"),
            Ok(t) => {
                let fields: std::collections::BTreeMap<String, String> = t
                    .all_fields()
                    .into_iter()
                    .zip(values.iter().cloned())
                    .collect();
                match (t.render_email(&fields), t.render_sms(&fields)) {
                    (Ok(_), Ok(_)) => "ok".into(),
                    (Err(TemplateError::SubjectLineBreak), _) => "subject_line_break".into(),
                    (Err(TemplateError::Render { .. }), _)
                    | (_, Err(TemplateError::Render { .. })) => "render".into(),
                    (e, s) => format!("{e:?} / {s:?}"),
                }
            }
        };
        if got != case["expect"] {
            wrong.push(format!("{text:?}: got {got}, expected {}", case["expect"]));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Provider event bodies the fuzz target `events` found or that stand beside its findings
/// (`tests/corpus/events`): each is read into an event that names its message and only real
/// addresses, or refused with a reason, never a panic.
#[test]
fn fuzzed_event_bodies_are_read_or_refused_with_a_reason() {
    use intake::events::{parse, Parsed};
    let dir = corpus().join("events");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("events corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for path in names {
        let body = String::from_utf8_lossy(&std::fs::read(&path).expect("file")).into_owned();
        match parse(&body) {
            Ok(Parsed::Event(e)) => {
                assert!(!e.message_id.trim().is_empty(), "{}", path.display());
                assert!(
                    e.suppress.iter().all(|s| !s.address.is_empty()),
                    "{}",
                    path.display()
                );
            }
            Ok(Parsed::Ignored(why)) | Err(why) => assert!(!why.is_empty()),
        }
    }
}
