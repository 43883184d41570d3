//! Email content against the emulator, IAM on: every email a MIME message sent as SES raw
//! content, carrying the dispatch's PDF and the recipient's own letter, blind-copied only in
//! the envelope, with a reply-to; the attachment judged at validation; a Bcc paced as the
//! extra sends it is.

use local::emulator::Emulator;
use local::runtime::Options;
use local::Local;
use mass_dispatch::proxy::FaultProxy;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// A PDF of `pages` empty pages, encrypted (an `/Encrypt` entry) when asked.
fn pdf(pages: usize, encrypted: bool) -> Vec<u8> {
    use lopdf::{dictionary, Object};
    let mut doc = lopdf::Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let kids: Vec<Object> = (0..pages)
        .map(|_| {
            doc.add_object(dictionary! {
                "Type" => "Page",
                "Parent" => pages_id,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()]
            })
            .into()
        })
        .collect();
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => pages as i64
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    if encrypted {
        let enc = doc.add_object(dictionary! {
            "Filter" => "Standard",
            "V" => 2,
            "R" => 3,
            "Length" => 128,
            "P" => -44,
            "O" => Object::string_literal(vec![1u8; 32]),
            "U" => Object::string_literal(vec![2u8; 32])
        });
        doc.trailer.set("Encrypt", enc);
        doc.trailer.set(
            "ID",
            vec![
                Object::string_literal(vec![3u8; 16]),
                Object::string_literal(vec![3u8; 16]),
            ],
        );
    }
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn text_of(pdf: &[u8]) -> String {
    pdf_extract::extract_text_from_mem(pdf).expect("the text of a PDF")
}

const MANIFEST: &str = r#"{
  "title": "Bins, with the guide attached",
  "list": "list.csv",
  "channel": "email",
  "email": {
    "from": "Town Hall <noreply@example.org>",
    "subject": "Your new bin, {{ name }}",
    "text": "email.txt",
    "html": "email.html",
    "attachment": "guide.pdf",
    "attach_letter": true,
    "bcc": ["archive@example.org", "audit@example.org"],
    "reply_to": ["help@example.org"]
  },
  "letter": {
    "subject": "New bins for {{ street }}",
    "text": "letter.md",
    "sender": "Town Hall",
    "home_country": "DK",
    "signature": ["Town Hall"]
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_email_carries_the_dispatch_pdf_and_its_own_letter_and_bcc_stays_in_the_envelope() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    // 20 destinations a second: with two Bcc, each email is three of them.
    let local = Local::on(
        emulator,
        Options {
            overrides: vec![(domain::config::vars::EMAIL_RATE_PER_SECOND, "20".into())],
            senders: Some(2),
            endpoint: Some(proxy.url.clone()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let portal = local.portal();
    let id = "with-guide";
    let guide = pdf(2, false);
    let mut list = String::from("recipient_id,name,email,address,postcode,city,street\n");
    for i in 1..=12 {
        if i == 12 {
            // No postal address: the letter is addressed to the email address.
            list.push_str("12,Lone Nopost,lone@example.net,,,,Sidevej\n");
        } else {
            list.push_str(&format!(
                "{i},Person {i:02},p{i}@example.net,Storegade {i},8000,Aarhus C,Storegade\n"
            ));
        }
    }
    local
        .upload_files(
            id,
            &[
                ("list.csv", list.as_bytes()),
                ("email.txt", b"Dear {{ name }}, the guide is attached."),
                (
                    "email.html",
                    b"<p>Dear {{ name }}, the guide is attached.</p>",
                ),
                (
                    "letter.md",
                    b"Dear {{ name }},\n\nYour bin for {{ street }} comes on Monday.",
                ),
                ("guide.pdf", guide.as_slice()),
                ("manifest.json", MANIFEST.as_bytes()),
            ],
        )
        .await
        .unwrap();
    let d = portal
        .wait_for(id, &["awaiting_approval"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(d["counts"]["valid"], 12, "{d}");

    // The sample shows what each email carries and who is blind-copied.
    let (status, sample) = portal
        .get(&format!("/dispatches/{id}/sample"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{sample}");
    let sample: Value = serde_json::from_str(&sample).unwrap();
    let first = &sample["email"][0]["message"];
    assert_eq!(
        first["attachments"],
        serde_json::json!(["guide.pdf", "letter.pdf"]),
        "{sample}"
    );
    assert_eq!(
        first["bcc"],
        serde_json::json!(["archive@example.org", "audit@example.org"])
    );
    assert_eq!(first["reply_to"], serde_json::json!(["help@example.org"]));

    proxy.clear_log();
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
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(d["counts"]["sent"], 12, "{d}");

    let mails = local.emulator.sent_emails().await.unwrap();
    assert_eq!(mails.len(), 12);
    let guide_hash = hex::encode(Sha256::digest(&guide));
    let mut seen = BTreeMap::new();
    for m in &mails {
        assert!(!m.raw.is_empty(), "sent as raw content");
        let to = m.to.first().cloned().expect("a To header");
        *seen.entry(to.clone()).or_insert(0) += 1;
        assert_eq!(m.subject, format!("Your new bin, {}", name_of(&to)));
        assert!(
            m.text.starts_with(&format!("Dear {}", name_of(&to))),
            "{}",
            m.text
        );
        assert!(m.body.starts_with("<p>Dear"), "{}", m.body);
        assert_eq!(m.reply_to, vec!["help@example.org".to_string()]);
        // Bcc: envelope recipients, never in a header.
        for bcc in ["archive@example.org", "audit@example.org"] {
            assert!(
                m.envelope.iter().any(|e| e.contains(bcc)),
                "{:?}",
                m.envelope
            );
            assert!(
                !m.headers.contains(bcc),
                "{bcc} in the headers:\n{}",
                m.headers
            );
        }
        assert!(
            !m.headers.to_ascii_lowercase().contains("\nbcc:"),
            "{}",
            m.headers
        );
        let names: Vec<&str> = m.attachments.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["guide.pdf", "letter.pdf"]);
        let (_, kind, bytes) = &m.attachments[0];
        assert_eq!(kind, "application/pdf");
        assert_eq!(
            hex::encode(Sha256::digest(bytes)),
            guide_hash,
            "the guide, byte for byte"
        );
        // The letter is the recipient's own: their name, their street, their address.
        let letter = text_of(&m.attachments[1].2);
        assert!(
            letter.contains(&format!("Dear {}", name_of(&to))),
            "{letter}"
        );
        if to == "lone@example.net" {
            assert!(letter.contains("lone@example.net"), "{letter}");
            assert!(letter.contains("Sidevej"), "{letter}");
        } else {
            let n: u32 = to[1..to.find('@').unwrap()].parse().unwrap();
            assert!(letter.contains(&format!("Storegade {n}")), "{letter}");
            assert!(letter.contains("8000 Aarhus C"), "{letter}");
        }
        for other in &mails {
            let o = other.to.first().unwrap();
            if o != &to {
                assert!(!letter.contains(&format!("Dear {},", name_of(o))));
            }
        }
    }
    assert_eq!(seen.len(), 12, "each recipient once: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");

    // Paced as three sends each: no second holds more than 20 destinations (7 emails),
    // where 12 unweighted emails would all have gone out within one.
    let sends: Vec<std::time::Instant> = proxy
        .log()
        .into_iter()
        .filter(|l| l.service == "ses" && l.op == "SendEmail")
        .map(|l| l.at)
        .collect();
    assert_eq!(sends.len(), 12, "one request per email");
    let busiest = sends
        .iter()
        .map(|t| {
            sends
                .iter()
                .filter(|u| **u >= *t && u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest * 3 <= 21,
        "{busiest} emails with two Bcc each in one second, at 20 destinations a second"
    );
    let span = *sends.iter().max().unwrap() - *sends.iter().min().unwrap();
    assert!(
        span >= Duration::from_millis(1500),
        "36 destinations at 20 a second take more than 1.5 s, took {span:?}"
    );
}

fn name_of(address: &str) -> String {
    if address == "lone@example.net" {
        return "Lone Nopost".into();
    }
    let n: u32 = address[1..address.find('@').unwrap()].parse().unwrap();
    format!("Person {n:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_that_is_not_a_plain_pdf_within_the_limit_fails_validation_by_name() {
    let local = Local::start(Options {
        overrides: vec![(
            domain::config::vars::EMAIL_ATTACHMENT_MAX_BYTES,
            "4000".into(),
        )],
        ..Options::default()
    })
    .await
    .unwrap();
    let portal = local.portal();
    let manifest = |file: &str| {
        format!(
            r#"{{"title": "t", "list": "list.csv", "channel": "email",
              "email": {{"from": "noreply@example.org", "subject": "s", "text": "email.txt",
                         "attachment": "{file}"}}}}"#
        )
    };
    let big = {
        let mut p = pdf(1, false);
        // A comment is still a PDF; it only makes the file larger than the limit.
        p.extend(std::iter::repeat_n(b'%', 5000));
        p
    };
    let cases: [(&str, &str, Vec<u8>, &str); 4] = [
        (
            "not-pdf",
            "notice.pdf",
            b"Dear all, see below".to_vec(),
            "is not a PDF",
        ),
        ("locked", "locked.pdf", pdf(1, true), "is encrypted"),
        ("large", "large.pdf", big, "at most 4000 are accepted"),
        (
            "absent",
            "absent.pdf",
            Vec::new(),
            "the package has no file 'absent.pdf'",
        ),
    ];
    for (id, file, bytes, _) in &cases {
        let mut files: Vec<(&str, &[u8])> = vec![
            ("list.csv", b"recipient_id,email\n1,a@example.net\n"),
            ("email.txt", b"Hello"),
        ];
        if *id != "absent" {
            files.push((file, bytes.as_slice()));
        }
        let m = manifest(file);
        files.push(("manifest.json", m.as_bytes()));
        local.upload_files(id, &files).await.unwrap();
    }
    for (id, file, _, says) in &cases {
        let d = portal
            .wait_for(id, &["validation_failed"], Duration::from_secs(60), |_| {})
            .await
            .unwrap();
        let problems = d["problems"].to_string();
        assert!(problems.contains(says), "{file}: {problems}");
        assert!(problems.contains(file), "{file}: {problems}");
    }
    // A plain PDF within the limit passes.
    local
        .upload_files(
            "fine",
            &[
                ("list.csv", b"recipient_id,email\n1,a@example.net\n"),
                ("email.txt", b"Hello"),
                ("fine.pdf", pdf(1, false).as_slice()),
                ("manifest.json", manifest("fine.pdf").as_bytes()),
            ],
        )
        .await
        .unwrap();
    let d = portal
        .wait_for(
            "fine",
            &["awaiting_approval"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["counts"]["valid"], 1, "{d}");

    // A sender that is not an identity of the account: refused, naming what was looked at.
    local
        .upload_files(
            "stranger",
            &[
                ("list.csv", b"recipient_id,email\n1,a@example.net\n"),
                ("email.txt", b"Hello"),
                (
                    "manifest.json",
                    br#"{"title": "t", "list": "list.csv", "channel": "email",
                        "email": {"from": "Someone <someone@elsewhere.example>", "subject": "s", "text": "email.txt"}}"#,
                ),
            ],
        )
        .await
        .unwrap();
    let d = portal
        .wait_for(
            "stranger",
            &["validation_failed"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    let problems = d["problems"].to_string();
    assert!(
        problems.contains("is not a verified sender")
            && problems.contains("someone@elsewhere.example or elsewhere.example"),
        "{problems}"
    );
    // The senders the portal may offer.
    let starter = local.portal_as("ann", &["MASSDISPATCH"]);
    let (status, body) = starter.get("/senders").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let senders: Value = serde_json::from_str(&body).unwrap();
    assert!(
        senders["senders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["identity"] == "example.org" && s["kind"] == "domain"),
        "{senders}"
    );
}

/// The link of the `List-Unsubscribe` header, from a message's header block (unfolded).
fn unsubscribe_link(headers: &str) -> String {
    let unfolded = headers.replace("\r\n ", " ").replace("\r\n\t", " ");
    let line = unfolded
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("list-unsubscribe:"))
        .unwrap_or_else(|| panic!("no List-Unsubscribe header:\n{headers}"));
    let start = line.find('<').expect("a link in angle brackets") + 1;
    let end = line.rfind('>').expect("a link in angle brackets");
    line[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_click_link_unsubscribes_its_own_address_once_and_a_tampered_one_changes_nothing() {
    let local = Local::start(Options {
        overrides: vec![(domain::config::vars::EMAIL_RATE_PER_SECOND, "50".into())],
        ..Options::default()
    })
    .await
    .unwrap();
    let portal = local.portal();
    let manifest = |title: &str| {
        format!(
            r#"{{"title": "{title}", "list": "list.csv", "channel": "email",
              "email": {{"from": "News <news@example.org>", "subject": "News for {{{{ name }}}}",
                         "text": "email.txt", "unsubscribe": true}}}}"#
        )
    };
    let list = "recipient_id,name,email\n1,Ann,ann@example.net\n2,Bo,bo@example.net\n";
    let send = |id: &'static str| {
        let m = manifest(id);
        let local = &local;
        async move {
            local
                .upload_files(
                    id,
                    &[
                        ("list.csv", list.as_bytes()),
                        ("email.txt", b"Dear {{ name }}"),
                        ("manifest.json", m.as_bytes()),
                    ],
                )
                .await
                .unwrap();
        }
    };
    send("news").await;
    let d = portal
        .wait_for(
            "news",
            &["awaiting_approval"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["counts"]["valid"], 2, "{d}");
    let (status, body) = portal.post("/dispatches/news/approve").await.unwrap();
    assert_eq!(status, 202, "{body}");
    portal
        .wait_for("news", &["completed"], Duration::from_secs(60), |_| {})
        .await
        .unwrap();

    let mails = local.emulator.sent_emails().await.unwrap();
    let link_of = |to: &str| {
        let m = mails
            .iter()
            .find(|m| m.to.first().map(String::as_str) == Some(to))
            .unwrap_or_else(|| panic!("no email to {to}"));
        assert!(
            m.headers
                .contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{}",
            m.headers
        );
        unsubscribe_link(&m.headers)
    };
    let ann = link_of("ann@example.net");
    let bo = link_of("bo@example.net");
    assert!(
        ann.starts_with(&format!("{}/unsubscribe?token=", local.system.api_url)),
        "{ann}"
    );
    assert_ne!(ann, bo, "each recipient's own link");

    let store = adapters::dynamodb::Store::from_config(&local.system.clients, &local.system.config);
    let suppressed = |who: &'static str| {
        let store = store.clone();
        async move {
            store
                .suppressed(&[who.to_string()])
                .await
                .unwrap()
                .contains_key(who)
        }
    };
    let http = reqwest::Client::new();

    // A tampered link: Bo's address with Ann's signature. Refused, and nothing changes.
    let token = |link: &str| link.split_once("token=").unwrap().1.to_string();
    let (ann_payload, ann_tag) = token(&ann)
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let (bo_payload, _) = token(&bo)
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let forged = format!(
        "{}/unsubscribe?token={bo_payload}.{ann_tag}",
        local.system.api_url
    );
    let truncated = format!("{}/unsubscribe?token={ann_payload}", local.system.api_url);
    for link in [&forged, &truncated] {
        let res = http
            .post(link.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{link}");
        let page = res.text().await.unwrap();
        assert!(page.contains("Nothing was changed"), "{page}");
    }
    assert!(!suppressed("bo@example.net").await);
    assert!(!suppressed("ann@example.net").await);

    // Opening the link (as a mail scanner does) only shows the button.
    let res = http.get(ann.as_str()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert!(
        !suppressed("ann@example.net").await,
        "a GET changes nothing"
    );

    // The mail client's one-click POST, twice: one suppression, one audit entry.
    for _ in 0..2 {
        let res = http
            .post(ann.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("You are unsubscribed"));
    }
    assert!(suppressed("ann@example.net").await);
    assert!(!suppressed("bo@example.net").await);
    let entry = store
        .suppressed(&["ann@example.net".to_string()])
        .await
        .unwrap()
        .remove("ann@example.net")
        .unwrap();
    assert_eq!(entry.reason, "unsubscribed");
    assert_eq!(
        entry.detail.as_deref(),
        Some("one-click link of dispatch news")
    );
    let (status, audit) = portal.get("/dispatches/news/audit").await.unwrap();
    assert_eq!(status, 200);
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let unsubscribes: Vec<&Value> = audit["audit"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .filter(|e| e["action"] == "unsubscribe")
        .collect();
    assert_eq!(unsubscribes.len(), 1, "{audit}");
    assert_eq!(unsubscribes[0]["actor"], "recipient");

    // The next mailing leaves Ann out.
    send("more-news").await;
    let d = portal
        .wait_for(
            "more-news",
            &["awaiting_approval"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["counts"]["valid"], 1, "{d}");
    assert_eq!(d["counts"]["excluded"], 1, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_goes_by_the_next_channel_of_the_order_that_can_reach_it_and_the_report_says_so() {
    let local = Local::start(Options {
        overrides: vec![
            (domain::config::vars::EMAIL_RATE_PER_SECOND, "50".into()),
            (domain::config::vars::SMS_RATE_PER_SECOND, "50".into()),
            (domain::config::vars::LETTER_RATE_PER_SECOND, "50".into()),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let portal = local.portal();
    let manifest = r#"{"title": "Bins, any way", "list": "list.csv", "channel": "column",
      "fallback": ["email", "sms", "letter"], "phone_region": "DK",
      "email": {"from": "noreply@example.org", "subject": "Bins, {{ name }}", "text": "email.txt"},
      "sms": {"text": "sms.txt"},
      "letter": {"subject": "Bins", "text": "letter.md", "sender": "Town Hall", "home_country": "DK"}}"#;
    let list = "recipient_id,name,email,phone,channel,address,postcode,city\n\
        1,Ann,ann@example.net,,,,,\n\
        2,Bo,,20202020,email,,,\n\
        3,Cy,,,,Storegade 3,8000,Aarhus C\n\
        4,Di,,,sms,,,\n\
        5,Eve,eve@example.net,20303030,,,,\n";
    // Eve's address bounced in an earlier mailing: she goes by SMS.
    adapters::dynamodb::Store::from_config(&local.system.clients, &local.system.config)
        .suppress(&[domain::suppression::Suppression {
            address: "eve@example.net".into(),
            reason: "bounced".into(),
            detail: None,
            at: domain::model::now_rfc3339(),
            message_id: "earlier".into(),
        }])
        .await
        .unwrap();
    local
        .upload_files(
            "any-way",
            &[
                ("list.csv", list.as_bytes()),
                ("email.txt", b"Dear {{ name }}"),
                ("sms.txt", b"Hi {{ name }}"),
                ("letter.md", b"Dear {{ name }}"),
                ("manifest.json", manifest.as_bytes()),
            ],
        )
        .await
        .unwrap();
    let d = portal
        .wait_for(
            "any-way",
            &["awaiting_approval"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["counts"]["valid"], 4, "{d}");
    assert_eq!(d["counts"]["invalid"], 1, "{d}");
    assert_eq!(d["counts"]["excluded"], 0, "{d}");
    // The channels the valid rows go by, after the fallbacks: Ann email; Bo and Eve SMS; Cy
    // letter.
    assert_eq!(
        d["validation"]["valid_by_channel"],
        serde_json::json!({"email": 1, "sms": 2, "letter": 1}),
        "{d}"
    );
    let (_, report) = portal.get("/dispatches/any-way/report").await.unwrap();
    let rows: Vec<(String, String, String)> = csv::Reader::from_reader(report.as_bytes())
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_string(), r[3].to_string(), r[4].to_string())
        })
        .collect();
    let of = |id: &str| -> Vec<(String, String)> {
        rows.iter()
            .filter(|r| r.0 == id)
            .map(|r| (r.1.clone(), r.2.clone()))
            .collect()
    };
    assert!(of("1").is_empty(), "{report}");
    assert_eq!(of("2").len(), 1, "{report}");
    assert_eq!(of("2")[0].0, "fallback");
    assert!(of("2")[0].1.starts_with("from email to sms"), "{report}");
    assert!(of("3")[0].1.starts_with("from email to letter"), "{report}");
    let four: Vec<String> = of("4").into_iter().map(|(c, _)| c).collect();
    assert_eq!(four, ["missing_address", "no_channel"], "{report}");
    assert_eq!(of("5").len(), 1, "{report}");
    assert!(
        of("5")[0].1.starts_with("from email to sms: suppressed"),
        "{report}"
    );

    let (status, body) = portal.post("/dispatches/any-way/approve").await.unwrap();
    assert_eq!(status, 202, "{body}");
    let d = portal
        .wait_for(
            "any-way",
            &["completed", "completed_with_errors"],
            Duration::from_secs(60),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(d["counts"]["failed"], 0, "{d}");
    assert_eq!(d["counts"]["sent"], 3, "{d}");
    assert_eq!(d["counts"]["created"], 1, "{d}");
    let (_, recipients) = portal
        .get("/dispatches/any-way/recipients?limit=10")
        .await
        .unwrap();
    let recipients: Value = serde_json::from_str(&recipients).unwrap();
    let channels: BTreeMap<String, String> = recipients["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["recipient_id"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    r["channel"].as_str().unwrap_or("-"),
                    r["state"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        channels,
        BTreeMap::from([
            ("1".to_string(), "email/sent".to_string()),
            ("2".to_string(), "sms/sent".to_string()),
            ("3".to_string(), "letter/created".to_string()),
            // The row that no channel reaches keeps the channel it asked for.
            ("4".to_string(), "sms/invalid".to_string()),
            ("5".to_string(), "sms/sent".to_string()),
        ])
    );
    let emails = local.emulator.sent_emails().await.unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].to, ["ann@example.net"]);
    let mut sms: Vec<String> = local
        .emulator
        .sent_sms()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.to)
        .collect();
    sms.sort();
    assert_eq!(sms, ["+4520202020", "+4520303030"]);
}
