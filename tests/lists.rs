//! Careless lists and packages at validation, against the emulator: a workbook is judged by
//! what it holds (its declared size is only a hint), a formula with no saved result gets a
//! problem of its own, every value the dispatch uses is bounded, the manifest's values are
//! bounded, and the download gives the list back as it was uploaded.

use local::Local;
use serde_json::Value;
use std::time::Duration;

const MANIFEST: &str = r#"{
  "title": "TITLE",
  "list": "LIST",
  "channel": "email",
  "columns": {"id": "recipient id"},
  "email": {"from": "Town Hall <noreply@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"}
}"#;

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/corpus/lists/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn upload(local: &Local, id: &str, title: &str, list_name: &str, list: Vec<u8>) {
    local.upload(id, list_name, list).await.unwrap();
    local
        .upload(id, "email.txt", b"Dear {{ name }}".to_vec())
        .await
        .unwrap();
    let manifest = MANIFEST.replace("TITLE", title).replace("LIST", list_name);
    local
        .upload(id, "manifest.json", manifest.into_bytes())
        .await
        .unwrap();
}

async fn validated(local: &Local, id: &str, states: &[&str]) -> Value {
    local
        .portal()
        .wait_for(id, states, Duration::from_secs(60), |_| {})
        .await
        .unwrap()
}

/// The report's lines after its header, each as its cells.
async fn report(local: &Local, id: &str) -> Vec<Vec<String>> {
    let (status, text) = local
        .portal()
        .get(&format!("/dispatches/{id}/report"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn careless_lists_are_judged_by_what_they_hold_and_given_back_as_uploaded() {
    let local = Local::start(Default::default())
        .await
        .expect("local environment");
    let portal = local.portal();

    // A sheet whose formatting reaches row 1,048,576 but holds 17 recipients.
    upload(
        &local,
        "formatted",
        "Formatted to the end",
        "people.xlsx",
        corpus("huge-dimension.xlsx"),
    )
    .await;
    // A workbook written by a program that does not calculate: a name is a formula with
    // no saved result.
    upload(
        &local,
        "uncalculated",
        "Never calculated",
        "people.xlsx",
        corpus("formula-unsaved.xlsx"),
    )
    .await;
    // Spaces around the header and the cells, and one name far past the cell limit.
    let long_name = "N".repeat(domain::limits::input::CELL_CHARS + 1);
    let spaced = format!(
        " Recipient ID , Name ,Email\n1,  Ann ,ann@example.net\n2,{long_name},bo@example.net\n"
    );
    upload(
        &local,
        "spaced",
        "Spaced",
        "people.csv",
        spaced.into_bytes(),
    )
    .await;
    // A title past its limit.
    let title = "T".repeat(domain::limits::input::TITLE_CHARS + 1);
    upload(
        &local,
        "long-title",
        &title,
        "people.csv",
        b"Recipient ID,Name,Email\n1,Ann,a@example.net\n".to_vec(),
    )
    .await;

    let d = validated(
        &local,
        "formatted",
        &["awaiting_approval", "validation_failed"],
    )
    .await;
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(
        (d["counts"]["total"].as_u64(), d["counts"]["valid"].as_u64()),
        (Some(17), Some(17))
    );

    let d = validated(
        &local,
        "uncalculated",
        &["awaiting_approval", "validation_failed"],
    )
    .await;
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(
        (
            d["counts"]["total"].as_u64(),
            d["counts"]["invalid"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let lines = report(&local, "uncalculated").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        &lines[0][..4],
        ["2", "0102031234", "name", "formula_without_result"]
    );
    assert!(
        lines[0][4].contains("save it and upload it again"),
        "{lines:?}"
    );

    let d = validated(
        &local,
        "spaced",
        &["awaiting_approval", "validation_failed"],
    )
    .await;
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(
        (
            d["counts"]["valid"].as_u64(),
            d["counts"]["invalid"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let lines = report(&local, "spaced").await;
    assert_eq!(&lines[0][..4], ["3", "2", "name", "value_too_long"]);
    assert_eq!(
        lines[0][4],
        "'name' is 10001 characters long; at most 10000 are accepted"
    );
    let (status, bytes) = portal
        .get_bytes("/dispatches/spaced/download")
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let text = String::from_utf8(bytes).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        " Recipient ID , Name ,Email,dispatch_status,dispatch_reason"
    );
    assert_eq!(rows[1], "1,  Ann ,ann@example.net,pending,");
    assert!(
        rows[2].starts_with(&format!(
            "2,{long_name},bo@example.net,invalid,value_too_long: "
        )),
        "{}",
        &rows[2][..200]
    );

    let d = validated(&local, "long-title", &["validation_failed"]).await;
    assert_eq!(
        d["problems"],
        serde_json::json!([
            "manifest.json: title is 201 characters long; at most 200 are accepted"
        ])
    );
    local.system.stop().await;
}
