//! Letters against the emulator: a mixed dispatch (email, SMS, letter) whose letter rows are
//! checked for a postal address, whose sample letter is a PDF before approval, and whose
//! letter recipients each get a PDF filed under the dispatch, holding their own name,
//! address and merge fields, with the address inside the envelope window; then the print
//! files, sorted as asked, built again, and closed.

use local::runtime::Options;
use local::Local;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const MANIFEST: &str = r#"{
  "title": "Letters test",
  "list": "list.csv",
  "channel": "column",
  "email": {"from": "Town Hall <noreply@example.org>", "subject": "Bins for {{ name }}", "text": "email.txt"},
  "sms": {"text": "sms.txt"},
  "letter": {
    "subject": "New bins for {{ street }}",
    "text": "letter.md",
    "sender": "Ærø Kommune",
    "lang": "da",
    "return_address": "Ærø Kommune · Statene 2 · 5970 Ærøskøbing",
    "letterhead": ["Ærø Kommune", "Teknik og Miljø"],
    "footer": ["aeroekommune.dk"],
    "closing": "Med venlig hilsen",
    "signature": ["Søren Æbelø", "Teknik og Miljø"],
    "home_country": "DK",
    "sort_by": ["postcode", "name"],
    "part_letters": 2
  },
  "phone_region": "DK"
}"#;

const LETTER: &str = "Kære {{ name }},\n\nDin **nye** affaldsbeholder til {{ street }} kommer *mandag*.\n\n- Stil den gamle ud\n- Husk låget\n";

const LIST: &str = "recipient_id,name,email,phone,channel,address,postcode,city,country,street\n\
1,Ann Email,ann@example.org,,email,,,,,Storegade 1\n\
2,Bo Sms,,20202020,sms,,,,,Storegade 2\n\
3,Søren Østergård,,,letter,Åboulevarden 12,8000,Aarhus C,,Åboulevarden\n\
4,Jürgen Groß,,,post,Hauptstraße 5,10115,Berlin,DE,Hauptstraße\n\
5,No Address,,,letter,,,,,Nowhere\n\
6,Far Away,,,letter,Main St 1,12345,Springfield,Atlantis,Main St\n\
7,Karen *Blixen*,,,letter,Rungstedvej 111,2960,Rungsted Kyst,dk,Rungstedvej\n";

/// The text of a PDF, each run of characters with where it starts on its page: millimetres
/// from the left edge and from the top edge.
struct Positions {
    page: u32,
    height: f64,
    word: String,
    start: Option<(f64, f64)>,
    out: Vec<(u32, f64, f64, String)>,
}

impl Positions {
    fn flush(&mut self) {
        if let Some((x, y)) = self.start.take() {
            let w = std::mem::take(&mut self.word);
            if !w.trim().is_empty() {
                self.out.push((self.page, x, y, w));
            }
        }
        self.word.clear();
    }
}

impl pdf_extract::OutputDev for Positions {
    fn begin_page(
        &mut self,
        page: u32,
        media: &pdf_extract::MediaBox,
        _: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), pdf_extract::OutputError> {
        self.page = page;
        self.height = media.ury - media.lly;
        Ok(())
    }
    fn end_page(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.flush();
        Ok(())
    }
    fn output_character(
        &mut self,
        trm: &pdf_extract::Transform,
        _: f64,
        _: f64,
        _: f64,
        c: &str,
    ) -> Result<(), pdf_extract::OutputError> {
        let pt = 25.4 / 72.0;
        if self.start.is_none() {
            self.start = Some((trm.m31 * pt, (self.height - trm.m32) * pt));
        }
        self.word.push_str(c);
        Ok(())
    }
    fn begin_word(&mut self) -> Result<(), pdf_extract::OutputError> {
        Ok(())
    }
    fn end_word(&mut self) -> Result<(), pdf_extract::OutputError> {
        Ok(())
    }
    fn end_line(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.flush();
        Ok(())
    }
}

fn lines_of(pdf: &[u8]) -> Vec<(u32, f64, f64, String)> {
    let doc = pdf_extract::Document::load_mem(pdf).expect("a PDF");
    let mut p = Positions {
        page: 0,
        height: 0.0,
        word: String::new(),
        start: None,
        out: Vec::new(),
    };
    pdf_extract::output_doc(&doc, &mut p).expect("its text");
    p.out
}

/// Where the line holding `text` starts, or a failure naming every line there is.
fn line_at(lines: &[(u32, f64, f64, String)], text: &str) -> (u32, f64, f64) {
    lines
        .iter()
        .find(|(_, _, _, t)| t.contains(text))
        .map(|(p, x, y, _)| (*p, *x, *y))
        .unwrap_or_else(|| panic!("'{text}' is not in the letter: {lines:?}"))
}

/// DIN 5008 form B's address window: 20 mm from the left, 45 mm from the top, 85 x 45 mm.
fn in_window((_, x, y): (u32, f64, f64)) -> bool {
    (20.0..=105.0).contains(&x) && (45.0..=90.0).contains(&y)
}

async fn s3_object(local: &Local, key: &str) -> Vec<u8> {
    local
        .system
        .clients
        .s3
        .get_object()
        .bucket(&local.system.config.reports_bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_dispatch_files_each_letter_with_its_own_address_in_the_window() {
    let local = Local::start(Options {
        overrides: vec![
            (domain::config::vars::EMAIL_RATE_PER_SECOND, "100".into()),
            (domain::config::vars::SMS_RATE_PER_SECOND, "100".into()),
            (domain::config::vars::LETTER_RATE_PER_SECOND, "100".into()),
        ],
        senders: Some(2),
        ..Options::default()
    })
    .await
    .unwrap();
    let portal = local.portal();
    let id = "letters";
    local
        .upload_files(
            id,
            &[
                ("list.csv", LIST.as_bytes()),
                ("email.txt", b"Dear {{ name }}"),
                ("sms.txt", b"Hi {{ name }}"),
                ("letter.md", LETTER.as_bytes()),
                ("manifest.json", MANIFEST.as_bytes()),
            ],
        )
        .await
        .unwrap();
    let d = portal
        .wait_for(id, &["awaiting_approval"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(d["counts"]["valid"], 5, "{d}");
    assert_eq!(d["counts"]["invalid"], 2, "{d}");

    // The report names the letter rows that cannot be posted, each by its own rule.
    let (status, report) = portal
        .get(&format!("/dispatches/{id}/report"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(report.as_bytes());
    let codes: BTreeMap<String, String> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_string(), r[3].to_string())
        })
        .collect();
    assert_eq!(
        codes,
        BTreeMap::from([
            ("5".to_string(), "missing_postal_address".to_string()),
            ("6".to_string(), "unknown_country".to_string()),
        ]),
        "{report}"
    );

    // The sample shows the first letter recipient's letter, and its PDF is a link away.
    let (status, sample) = portal
        .get(&format!("/dispatches/{id}/sample"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{sample}");
    let sample: Value = serde_json::from_str(&sample).unwrap();
    let first = &sample["letter"][0];
    assert_eq!(first["recipient_id"], "3", "{sample}");
    assert_eq!(first["message"]["subject"], "New bins for Åboulevarden");
    assert_eq!(first["pages"], 1);
    let (status, link) = portal
        .location(&format!("/dispatches/{id}/sample/letters/1"))
        .await
        .unwrap();
    assert_eq!(status, 303);
    assert!(link.unwrap().contains("sample-letter-1.pdf"));
    let (status, pdf) = portal
        .get_bytes(&format!("/dispatches/{id}/sample/letters/1"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let lines = lines_of(&pdf);
    assert!(in_window(line_at(&lines, "Søren Østergård")), "{lines:?}");
    let (status, _) = portal
        .get(&format!("/dispatches/{id}/sample/letters/9"))
        .await
        .unwrap();
    assert_eq!(status, 404);

    let (status, body) = portal
        .post(&format!("/dispatches/{id}/approve"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let d = portal
        .wait_for(
            id,
            &["completed", "completed_with_errors"],
            Duration::from_secs(120),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["counts"]["sent"], 2, "{d}");
    assert_eq!(d["counts"]["created"], 3, "{d}");
    assert_eq!(d["recipient_states"]["created"], 3, "{d}");
    assert_eq!(d["progress"], "5 of 5 sent or created", "{d}");
    assert_eq!(d["counts"]["failed"], 0, "{d}");

    let (status, body) = portal
        .get(&format!("/dispatches/{id}/recipients?limit=100"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    let by_id: BTreeMap<String, Value> = body["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["recipient_id"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    // Each letter recipient's letter: their own name, address and merge fields, the address
    // in the window and the text below it.
    for (rid, name, address, merged) in [
        (
            "3",
            "Søren Østergård",
            vec!["Åboulevarden 12", "8000 Aarhus C"],
            "Åboulevarden",
        ),
        (
            "4",
            "Jürgen Groß",
            vec!["Hauptstraße 5", "10115 Berlin", "GERMANY"],
            "Hauptstraße",
        ),
        (
            "7",
            "Karen *Blixen*",
            vec!["Rungstedvej 111", "2960 Rungsted Kyst"],
            "Rungstedvej",
        ),
    ] {
        let r = &by_id[rid];
        assert_eq!(r["state"], "created", "{r}");
        assert_eq!(r["channel"], "letter", "{r}");
        let key = r["message_id"].as_str().expect("the letter's document");
        assert!(
            key.starts_with(&format!("dispatches/{id}/letters/")) && key.ends_with(".pdf"),
            "{key}"
        );
        let pdf = s3_object(&local, key).await;
        let lines = lines_of(&pdf);
        assert!(in_window(line_at(&lines, name)), "{name}: {lines:?}");
        for a in &address {
            assert!(in_window(line_at(&lines, a)), "{a}: {lines:?}");
        }
        let greeting = line_at(&lines, &format!("Kære {name},"));
        assert!(
            greeting.2 > 90.0,
            "the text is below the window: {greeting:?}"
        );
        let body = line_at(&lines, &format!("affaldsbeholder til {merged}"));
        assert!(body.2 > greeting.2);
        line_at(&lines, "Med venlig hilsen");
        line_at(&lines, "Søren Æbelø");
        // A letter is its own recipient's only.
        for other in ["Søren Østergård", "Jürgen Groß", "Karen"] {
            if other != name && !name.starts_with(other) {
                assert!(
                    !lines.iter().any(|(_, _, _, t)| t.contains(other)),
                    "{other} in {name}'s letter"
                );
            }
        }
    }
    // The history names each letter by its document, with its state.
    let (status, history) = portal
        .get(&format!("/dispatches/{id}/history"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{history}");
    let mut reader = csv::Reader::from_reader(history.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let letter_rows: Vec<csv::StringRecord> = reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[col("channel")] == "letter" && &r[col("state")] == "created")
        .collect();
    assert_eq!(letter_rows.len(), 3, "{history}");
    for r in &letter_rows {
        let rid = &r[col("recipient_id")];
        assert_eq!(
            &r[col("external_id")],
            by_id[rid]["message_id"].as_str().unwrap()
        );
        assert_eq!(&r[col("shipment_state")], "created");
    }

    // The rows that could not be posted have no letter.
    for rid in ["5", "6"] {
        assert_eq!(by_id[rid]["state"], "invalid");
        assert!(by_id[rid]["message_id"].is_null());
    }

    // Once every letter is produced the print files are built by themselves: parts of at
    // most two letters, sorted by postcode (as numbers) and then name.
    let run = print_ready(&local, id, 1).await;
    assert_eq!(run["letters"], 3, "{run}");
    assert_eq!(run["requested_by"], "system");
    let parts = run["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{run}");
    assert_eq!(
        (parts[0]["letters"].as_u64(), parts[1]["letters"].as_u64()),
        (Some(2), Some(1))
    );
    let (status, index) = portal
        .get(&format!("/dispatches/{id}/print/parts/1?file=index"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{index}");
    let rows: Vec<Vec<String>> = csv::Reader::from_reader(index.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                "1".to_string(),
                "1".into(),
                "1".into(),
                "7".into(),
                "Karen *Blixen*, Rungstedvej 111, 2960 Rungsted Kyst".into()
            ],
            vec![
                "1".to_string(),
                "2".into(),
                "1".into(),
                "3".into(),
                "Søren Østergård, Åboulevarden 12, 8000 Aarhus C".into()
            ],
        ],
        "{index}"
    );
    let (status, pdf) = portal
        .get_bytes(&format!("/dispatches/{id}/print/parts/1"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(sha256(&pdf), parts[0]["pdf_sha256"].as_str().unwrap());
    let lines = lines_of(&pdf);
    let karen = line_at(&lines, "Karen *Blixen*");
    let soren = line_at(&lines, "Søren Østergård");
    assert_eq!((karen.0, soren.0), (1, 2), "each letter on its own page");
    assert!(in_window(karen) && in_window(soren), "{lines:?}");
    let (status, part2) = portal
        .get(&format!("/dispatches/{id}/print/parts/2?file=index"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        part2.contains(",4,") && part2.contains("GERMANY"),
        "{part2}"
    );

    // Built again: a new build replaces the old one, whose files are gone.
    let first_pdf = parts[0]["pdf_key"].as_str().unwrap().to_string();
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/print"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["print"]["generation"], 2);
    let run = print_ready(&local, id, 2).await;
    assert_eq!(run["requested_by"], "approver", "{run}");
    let second_pdf = run["parts"][0]["pdf_key"].as_str().unwrap().to_string();
    assert!(second_pdf.contains("/print/2/"), "{second_pdf}");
    assert!(!exists(&local, &first_pdf).await, "{first_pdf} was deleted");
    assert!(exists(&local, &second_pdf).await);

    // Closed: the files are final, with the hashes they were closed with.
    let (status, closed) = portal
        .post(&format!("/dispatches/{id}/print/close"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["closed_by"], "approver");
    let bytes = s3_object(&local, &second_pdf).await;
    assert_eq!(
        sha256(&bytes),
        closed["parts"][0]["pdf_sha256"].as_str().unwrap()
    );
    let (status, body) = portal
        .post(&format!("/dispatches/{id}/print"))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("closed"),
        "{body}"
    );
    let (status, _) = portal
        .post(&format!("/dispatches/{id}/print/close"))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, audit) = portal
        .get(&format!("/dispatches/{id}/audit"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        audit.contains("letter run closed: build 2, 3 letters in 2 parts"),
        "{audit}"
    );
    local.system.stop().await;
}

/// Waits for build `generation` of the print files to be ready.
async fn print_ready(local: &Local, id: &str, generation: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = local
            .portal()
            .get(&format!("/dispatches/{id}/print"))
            .await
            .unwrap();
        if status == 200 {
            let run: Value = serde_json::from_str(&body).unwrap();
            if run["generation"] == generation && run["state"] == "ready" {
                return run;
            }
            assert_ne!(run["state"], "failed", "{run}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build {generation} of the print files was not ready: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn exists(local: &Local, key: &str) -> bool {
    local
        .system
        .clients
        .s3
        .head_object()
        .bucket(&local.system.config.reports_bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}
