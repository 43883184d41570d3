use super::*;

#[test]
fn address_fingerprints_ignore_case_both_ways() {
    let long = format!("{}@Example.ORG", "A".repeat(200));
    for a in [
        "Ann@Example.org",
        "ÅSE@example.dk",
        long.as_str(),
        "+4512345678",
    ] {
        assert_eq!(
            address_fingerprint(Channel::Email, a),
            fingerprint(&format!("email:{}", a.to_lowercase())),
            "{a}"
        );
    }
    assert_ne!(
        address_fingerprint(Channel::Email, "a@b.c"),
        address_fingerprint(Channel::Sms, "a@b.c")
    );
}
use crate::template::{EmailSource, SmsSource, TemplateSource};

fn manifest() -> Manifest {
    Manifest::parse(
        br#"{"title":"t","list":"l.csv","channel":"column","columns":{"id":"id"},
            "email":{"from":"a@example.org","subject":"Hi {{ name }}","text":"t.txt"},
            "sms":{"text":"s.txt"}}"#,
    )
    .unwrap()
}

fn template() -> MessageTemplate {
    MessageTemplate::compile(TemplateSource {
        letter: None,
        email: Some(EmailSource {
            from: "a@example.org".into(),
            subject: "Hi {{ name }}".into(),
            text: "Dear {{ name }} in {{ town }}".into(),
            html: None,
            ..Default::default()
        }),
        sms: Some(SmsSource {
            text: "Hi {{ name }}".into(),
            sender_id: None,
        }),
    })
    .unwrap()
}

fn row(line: u64, cells: &[&str]) -> RawRow {
    RawRow::new(line, cells)
}

fn excluding_manifest() -> Manifest {
    Manifest::parse(
        br#"{"title":"t","list":"l.csv","channel":"sms","columns":{"id":"id"},
            "sms":{"text":"s.txt"},
            "exclusions":{"status_column":"CPR status","excluded_codes":["80","90"],
                          "consent_column":"consent"}}"#,
    )
    .unwrap()
}

#[test]
fn status_codes_and_missing_consent_exclude_valid_rows_with_the_reason() {
    let (m, t) = (excluding_manifest(), template());
    let h: Vec<String> = ["id", "name", "phone", "cpr_status", "Consent"]
        .map(String::from)
        .to_vec();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    let ok = v.check(&row(2, &["1", "Ann", "20123401", "01", "yes"]));
    assert_eq!(ok.recipient.state, RecipientState::Pending);
    assert!(ok.problems.is_empty());
    let dead = v.check(&row(3, &["2", "Bo", "20123402", "90", "Ja"]));
    assert_eq!(dead.recipient.state, RecipientState::Excluded);
    assert_eq!(dead.problems.len(), 1);
    assert_eq!(dead.problems[0].code, codes::EXCLUDED_STATUS);
    assert_eq!(dead.problems[0].column, "CPR status");
    assert_eq!(
        dead.recipient.reason.as_deref(),
        Some("excluded_status: status code 90 is excluded from this dispatch")
    );
    let no = v.check(&row(4, &["3", "Cy", "20123403", "01", ""]));
    assert_eq!(no.recipient.state, RecipientState::Excluded);
    assert_eq!(no.problems[0].code, codes::NO_CONSENT);
    let odd = v.check(&row(5, &["4", "Di", "20123404", "01", "maybe"]));
    assert_eq!(odd.recipient.state, RecipientState::Invalid);
    assert_eq!(odd.problems[0].code, codes::INVALID_CONSENT);
    // A row with a problem is invalid, not excluded, even when a rule would exclude it.
    let both = v.check(&row(6, &["5", "Ed", "12", "80", "no"]));
    assert_eq!(both.recipient.state, RecipientState::Invalid);
    assert!(both.problems.iter().all(|p| p.code == codes::INVALID_PHONE));
}

#[test]
fn shifted_rows_are_invalid_and_sms_rows_carry_their_segments() {
    let (m, t) = (manifest(), template());
    let h: Vec<String> = ["id", "name", "email", "phone", "channel", "town"]
        .map(String::from)
        .to_vec();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    // "Smith, Ann" unquoted: every value after the name moves one column right.
    let shifted = v.check(&row(
        2,
        &["1", "Smith", " Ann", "a@example.org", "", "email", "Oslo"],
    ));
    assert_eq!(shifted.recipient.state, RecipientState::Invalid);
    assert!(shifted
        .problems
        .iter()
        .any(|p| p.code == codes::EXTRA_VALUES
            && p.message
                .contains("1 values after the last column ('Oslo')")));
    // Empty values after the last column (trailing delimiters) are harmless.
    let trailing = v.check(&row(3, &["2", "Bo", "", "20123402", "sms", "Oslo", "", ""]));
    assert!(trailing.problems.is_empty(), "{:?}", trailing.problems);
    let s = trailing.segments.expect("an SMS row has its segments");
    assert_eq!(
        (s.encoding, s.units, s.segments),
        (crate::sms::Encoding::Gsm7, 5, 1)
    );
    let email = v.check(&row(4, &["3", "Cy", "c@example.org", "", "email", "Oslo"]));
    assert!(email.problems.is_empty());
    assert_eq!(email.segments, None);
}

#[test]
fn exclusion_columns_must_exist_and_codes_need_a_column() {
    let (m, t) = (excluding_manifest(), template());
    let h: Vec<String> = ["id", "name", "phone"].map(String::from).to_vec();
    let e = Validator::new("d", &m, &t, &h, "DK").err().unwrap();
    assert!(
        e.iter().any(|p| p.contains("status column 'CPR status'")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|p| p.contains("consent column 'consent'")),
        "{e:?}"
    );
    let half = Manifest::parse(
        br#"{"title":"t","list":"l.csv","channel":"sms","sms":{"text":"s.txt"},
            "exclusions":{"excluded_codes":["90"]}}"#,
    );
    assert!(half.unwrap_err().to_string().contains("go together"));
}

#[test]
fn header_problems_name_what_is_missing() {
    let (m, t) = (manifest(), template());
    let e = Validator::new("d", &m, &t, &["Name".into(), "Email".into()], "DK")
        .err()
        .unwrap();
    assert!(
        e.contains(&"the list has no 'id' column (recipient id)".to_string()),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|p| p.contains("merge fields that are not columns of the list: town")),
        "{e:?}"
    );
    assert!(e.iter().any(|p| p.contains("no 'channel' column")), "{e:?}");
}

#[test]
fn rows_become_pending_or_invalid_with_reasons() {
    let (m, t) = (manifest(), template());
    let h = vec![
        "ID".into(),
        "Name".into(),
        "Email".into(),
        "Phone".into(),
        "Channel".into(),
        "Town".into(),
    ];
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    let ok = v.check(&row(
        2,
        &["1", "Ann", "Ann@Example.ORG", "", "email", "Aarhus"],
    ));
    assert_eq!(ok.recipient.state, RecipientState::Pending);
    assert_eq!(ok.recipient.address.as_deref(), Some("Ann@example.org"));
    assert_eq!(
        ok.recipient.fields.get("town").map(String::as_str),
        Some("Aarhus")
    );

    let sms = v.check(&row(3, &["2", "Bo", "", "20 12 34 56", "sms", ""]));
    assert_eq!(
        sms.recipient.state,
        RecipientState::Pending,
        "{:?}",
        sms.problems
    );
    assert_eq!(sms.recipient.address.as_deref(), Some("+4520123456"));

    let dup = v.check(&row(
        4,
        &["1", "Cy", "cy@example.org", "", "email", "Odense"],
    ));
    assert_eq!(dup.recipient.state, RecipientState::Invalid);
    assert!(!dup.keyed_by_id);
    assert_eq!(dup.problems[0].code, codes::DUPLICATE_ID);

    let bad = v.check(&row(5, &["3", "", "not-an-address", "", "email", "X"]));
    let got: Vec<_> = bad.problems.iter().map(|p| p.code).collect();
    assert_eq!(got, [codes::INVALID_EMAIL, codes::MISSING_VALUE]);
    assert!(bad
        .recipient
        .reason
        .unwrap()
        .contains("not a usable email address"));

    let unknown = v.check(&row(6, &["4", "Di", "", "", "fax", "X"]));
    assert_eq!(unknown.problems[0].code, codes::UNKNOWN_CHANNEL);

    let inferred = v.check(&row(7, &["5", "Ed", "", "+45 30 11 22 33", "", ""]));
    assert_eq!(inferred.recipient.channel, Some(Channel::Sms));
    assert_eq!(inferred.recipient.state, RecipientState::Pending);

    let again = v.check(&row(8, &["6", "Fi", "ann@example.org", "", "email", "Y"]));
    assert_eq!(again.problems[0].code, codes::DUPLICATE_ADDRESS);
}

#[test]
fn phone_numbers_normalise_to_e164() {
    let dk = phonenumber::country::Id::DK;
    assert_eq!(
        check_phone("+44 20 7946 0958", dk).unwrap(),
        "+442079460958"
    );
    assert_eq!(check_phone("20123456", dk).unwrap(), "+4520123456");
    assert_eq!(check_phone("12", dk).unwrap_err().0, codes::INVALID_PHONE);
    assert_eq!(check_phone("", dk).unwrap_err().0, codes::MISSING_ADDRESS);
}

#[test]
fn email_addresses_are_checked_properly() {
    assert!(check_email("a.b+tag@sub.example.co.uk").is_ok());
    assert_eq!(check_email("a@@b.com").unwrap_err().0, codes::INVALID_EMAIL);
    assert_eq!(
        check_email("a@intranet").unwrap_err().0,
        codes::INVALID_EMAIL
    );
    assert_eq!(
        check_email("Ann <a@b.com>").unwrap_err().0,
        codes::INVALID_EMAIL
    );
    assert_eq!(check_email("").unwrap_err().0, codes::MISSING_ADDRESS);
}

#[test]
fn a_formula_without_a_saved_result_gets_its_own_problem_in_place_of_an_empty_value() {
    let (m, t) = (manifest(), template());
    let h: Vec<String> = ["id", "name", "email", "phone", "channel", "town", "note"]
        .map(String::from)
        .to_vec();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    let unsaved =
        row(2, &["1", "", "a@example.org", "", "email", "Oslo", ""]).with_no_result(vec![1]);
    let c = v.check(&unsaved);
    assert_eq!(c.recipient.state, RecipientState::Invalid);
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert_eq!(c.problems[0].code, codes::FORMULA_WITHOUT_RESULT);
    assert_eq!(c.problems[0].column, "name");
    assert!(c.problems[0]
        .message
        .contains("open the file in the spreadsheet program, save it"));
    // A formula in a column the dispatch does not use changes nothing.
    let unused =
        row(3, &["2", "Bo", "b@example.org", "", "email", "Oslo", ""]).with_no_result(vec![6]);
    assert!(v.check(&unused).problems.is_empty());
}

#[test]
fn values_past_their_limits_make_the_row_invalid_without_storing_them() {
    use domain::limits::input;
    let (m, t) = (manifest(), template());
    let h: Vec<String> = ["id", "name", "email", "phone", "channel", "town", "note"]
        .map(String::from)
        .to_vec();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    let long_id = "9".repeat(input::RECIPIENT_ID_BYTES + 1);
    let c = v.check(&row(
        2,
        &[&long_id, "Ann", "a@example.org", "", "email", "Oslo", ""],
    ));
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert_eq!(c.problems[0].code, codes::VALUE_TOO_LONG);
    assert!(c.problems[0].message.contains("at most 256"));
    assert_eq!(
        c.recipient.recipient_id, "",
        "an id past its limit is not kept"
    );
    assert!(!c.keyed_by_id);
    let within_id = "9".repeat(input::RECIPIENT_ID_BYTES);
    assert!(v
        .check(&row(
            3,
            &[&within_id, "Ann", "a3@example.org", "", "email", "Oslo", ""]
        ))
        .problems
        .is_empty());

    let long_town = "å".repeat(input::CELL_CHARS + 1);
    let c = v.check(&row(
        4,
        &["4", "Bo", "b@example.org", "", "email", &long_town, ""],
    ));
    assert_eq!(c.problems.len(), 1);
    assert_eq!(c.problems[0].code, codes::VALUE_TOO_LONG);
    assert_eq!(c.problems[0].column, "town");
    assert!(c.recipient.fields.is_empty());
    assert!(c.recipient.reason.as_ref().unwrap().len() < 1_000);
    // Characters count, not bytes: 10,000 å are within the limit.
    let full_town = "å".repeat(input::CELL_CHARS);
    assert!(v
        .check(&row(
            5,
            &["5", "Cy", "c@example.org", "", "email", &full_town, ""]
        ))
        .problems
        .is_empty());
    // A long cell in a column the dispatch does not use is not judged.
    let long_note = "x".repeat(input::CELL_CHARS * 3);
    assert!(v
        .check(&row(
            6,
            &["6", "Di", "d@example.org", "", "email", "Oslo", &long_note]
        ))
        .problems
        .is_empty());
}

#[test]
fn merge_values_too_large_together_make_the_row_invalid_and_are_not_stored() {
    use domain::limits::input;
    let m = manifest();
    let fields: Vec<String> = (0..12).map(|i| format!("f{i}")).collect();
    let text = fields
        .iter()
        .map(|f| format!("{{{{ {f} }}}}"))
        .collect::<String>();
    let t = MessageTemplate::compile(TemplateSource {
        letter: None,
        email: Some(EmailSource {
            from: "a@example.org".into(),
            subject: "Hi".into(),
            text,
            html: None,
            ..Default::default()
        }),
        sms: None,
    })
    .unwrap();
    let mut h: Vec<String> = ["id", "email", "channel"].map(String::from).to_vec();
    h.extend(fields.iter().cloned());
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    let value = "v".repeat(input::CELL_CHARS);
    let mut cells = vec!["1", "a@example.org", "email"];
    cells.extend(std::iter::repeat_n(value.as_str(), 12));
    let c = v.check(&row(2, &cells));
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert_eq!(c.problems[0].code, codes::VALUES_TOO_LARGE);
    assert!(
        c.problems[0].message.contains("bytes; at most 100000"),
        "{}",
        c.problems[0].message
    );
    assert!(c.recipient.fields.is_empty());
    // Nine such values and three short ones (about 90,000 bytes) are within the limit.
    cells.truncate(3 + 9);
    cells.extend(["a", "b", "c"]);
    cells[0] = "2";
    cells[1] = "b@example.org";
    let c = v.check(&row(3, &cells));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    // Control characters take six bytes each as stored: two values of 10,000 of them
    // (20,000 bytes of text) are too many.
    let controls = "\u{1}".repeat(input::CELL_CHARS);
    let mut cells = vec!["3", "c@example.org", "email", &controls, &controls];
    cells.extend(std::iter::repeat_n("v", 10));
    let c = v.check(&row(4, &cells));
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert_eq!(c.problems[0].code, codes::VALUES_TOO_LARGE);
}

#[test]
fn a_declared_sheet_size_past_what_the_file_could_hold_is_not_believed() {
    let (m, t) = (manifest(), template());
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/corpus/lists/huge-dimension.xlsx"
    ))
    .unwrap();
    let size = bytes.len() as u64;
    let reader = ListReader::open("huge-dimension.xlsx", bytes, None).unwrap();
    assert_eq!(reader.declared_rows(), Some(1_048_575));
    let h: Vec<String> = ["id", "name", "email", "phone", "channel", "town"]
        .map(String::from)
        .to_vec();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    v.presize(&reader, size, 0, 1_000_000);
    assert!(v.seen_ids.capacity() >= (size / MIN_SHEET_ROW_BYTES) as usize);
    assert!(
        v.seen_ids.capacity() < 4 * (size / MIN_SHEET_ROW_BYTES) as usize,
        "{}",
        v.seen_ids.capacity()
    );
}

fn postal<'a>(
    lines: Vec<&'a str>,
    postcode: &'a str,
    city: &'a str,
    country: &'a str,
) -> PostalCells<'a> {
    PostalCells {
        addressee: "Ann Holm",
        lines,
        postcode,
        city,
        country,
    }
}

#[test]
fn a_postal_address_is_printed_as_the_post_of_its_country_expects() {
    let dk = isocountry::CountryCode::DNK;
    let home = postal(vec!["Storegade 1", ""], "8000", "Aarhus C", "");
    assert_eq!(
        postal_address(&home, dk).unwrap(),
        ["Ann Holm", "Storegade 1", "8000 Aarhus C"]
    );
    // Abroad: the country on the last line, in capitals, by code, alpha-3 or name.
    for c in ["DE", "deu", "Germany", "Deutschland"] {
        let de = postal(vec!["Hauptstraße 5"], "10115", "Berlin", c);
        assert_eq!(
            postal_address(&de, dk).unwrap(),
            ["Ann Holm", "Hauptstraße 5", "10115 Berlin", "GERMANY"],
            "{c}"
        );
    }
    let gb = postal(vec!["10 Downing Street"], "sw1a 2aa", "London", "UK");
    assert_eq!(
        postal_address(&gb, dk).unwrap(),
        [
            "Ann Holm",
            "10 Downing Street",
            "LONDON",
            "SW1A 2AA",
            "UNITED KINGDOM"
        ]
    );
    let us = postal(
        vec!["1600 Pennsylvania Ave"],
        "DC 20500",
        "Washington",
        "US",
    );
    assert_eq!(postal_address(&us, dk).unwrap()[2], "Washington DC 20500");
}

#[test]
fn a_postal_address_that_cannot_be_posted_says_why() {
    let dk = isocountry::CountryCode::DNK;
    let code = |c: &PostalCells| postal_address(c, dk).unwrap_err().0;
    assert_eq!(
        code(&postal(vec![""], "8000", "Aarhus", "")),
        codes::MISSING_POSTAL_ADDRESS
    );
    assert_eq!(
        code(&postal(vec!["Gade 1"], "8000", "", "")),
        codes::MISSING_POSTAL_ADDRESS
    );
    assert_eq!(
        code(&postal(vec!["Gade 1"], "1", "X", "Atlantis")),
        codes::UNKNOWN_COUNTRY
    );
    let many = postal(
        vec!["c/o B", "Gade 1", "2. sal", "Baghuset"],
        "8000",
        "Aarhus",
        "SE",
    );
    let (c, m) = postal_address(&many, dk).unwrap_err();
    assert_eq!(c, codes::ADDRESS_TOO_MANY_LINES);
    assert!(m.contains("7 lines"), "{m}");
    let wide = "Den Lange Vej Der Aldrig Slutter Nogensinde 1234";
    let (c, m) = postal_address(&postal(vec![wide], "8000", "Aarhus", ""), dk).unwrap_err();
    assert_eq!(c, codes::ADDRESS_LINE_TOO_LONG);
    assert!(m.contains("48 characters") && m.contains("45"), "{m}");
    // White space inside a cell is tidied, not counted.
    let tidy = postal(vec!["  Gade   1 "], "8000", " Aarhus  C", "");
    assert_eq!(
        postal_address(&tidy, dk).unwrap()[1..],
        ["Gade 1", "8000 Aarhus C"]
    );
}

#[test]
fn a_row_its_preferred_channel_cannot_reach_falls_back_in_order_and_says_so() {
    let m = Manifest::parse(
        br#"{"title":"t","list":"l.csv","channel":"column","columns":{"id":"id"},
            "fallback":["email","sms","letter"],
            "email":{"from":"a@example.org","subject":"Hi {{ name }}","text":"t.txt"},
            "sms":{"text":"s.txt"},
            "letter":{"subject":"Hi","text":"l.md","sender":"Town"}}"#,
    )
    .unwrap();
    let t = MessageTemplate::compile(TemplateSource {
        email: Some(EmailSource {
            from: "a@example.org".into(),
            subject: "Hi {{ name }}".into(),
            text: "Dear {{ name }}".into(),
            ..Default::default()
        }),
        sms: Some(SmsSource {
            text: "Hi {{ name }}".into(),
            sender_id: None,
        }),
        letter: Some(crate::template::LetterSource {
            subject: "Hi".into(),
            text: "Dear {{ name }}".into(),
            layout: Default::default(),
        }),
    })
    .unwrap();
    let h: Vec<String> = [
        "id", "name", "email", "phone", "channel", "address", "postcode", "city",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    let check = |v: &mut Validator, cells: &[&str]| v.check(&row(2, cells));

    // No preference: the first of the order.
    let first = check(
        &mut v,
        &["1", "Ann", "ann@example.org", "20123456", "", "", "", ""],
    );
    assert_eq!(first.recipient.channel, Some(Channel::Email));
    assert!(first.notices.is_empty() && first.problems.is_empty());

    // No email address: by SMS, and the report says from which to which and why.
    let sms = check(&mut v, &["2", "Bo", "", "20123457", "email", "", "", ""]);
    assert_eq!(
        sms.recipient.state,
        RecipientState::Pending,
        "{:?}",
        sms.problems
    );
    assert_eq!(sms.recipient.channel, Some(Channel::Sms));
    assert_eq!(sms.recipient.address.as_deref(), Some("+4520123457"));
    assert_eq!(sms.notices.len(), 1);
    assert_eq!(sms.notices[0].code, codes::FALLBACK);
    assert!(
        sms.notices[0]
            .message
            .starts_with("from email to sms: missing_address"),
        "{}",
        sms.notices[0].message
    );

    // An invalid email and no phone: by letter.
    let letter = check(
        &mut v,
        &[
            "3",
            "Cy",
            "not-an-address",
            "",
            "",
            "Storegade 1",
            "8000",
            "Aarhus C",
        ],
    );
    assert_eq!(
        letter.recipient.channel,
        Some(Channel::Letter),
        "{:?}",
        letter.problems
    );
    assert_eq!(
        letter.recipient.address.as_deref(),
        Some("Cy\nStoregade 1\n8000 Aarhus C")
    );
    assert!(letter.notices[0]
        .message
        .starts_with("from email to letter: invalid_email"));

    // Nothing reaches the row: invalid, reported, never sent.
    let none = check(&mut v, &["4", "Di", "", "", "sms", "", "", ""]);
    assert_eq!(none.recipient.state, RecipientState::Invalid);
    let codes_of: Vec<&str> = none.problems.iter().map(|p| p.code).collect();
    assert_eq!(codes_of, [codes::MISSING_ADDRESS, codes::NO_CHANNEL]);
    assert!(none.notices.is_empty());

    // A row that prefers a later channel and can be reached on it stays there.
    let own = check(
        &mut v,
        &["5", "Ed", "ed@example.org", "20123458", "sms", "", "", ""],
    );
    assert_eq!(own.recipient.channel, Some(Channel::Sms));
    assert!(own.notices.is_empty());
}

#[test]
fn a_fallback_order_needs_per_row_channels_and_a_part_for_each() {
    let bad = |json: &str| Manifest::parse(json.as_bytes()).unwrap_err().to_string();
    assert!(bad(
        r#"{"title":"t","list":"l.csv","channel":"email","fallback":["email"],
        "email":{"from":"a@example.org","subject":"s","text":"t.txt"}}"#
    )
    .contains("fallback needs channel: column"));
    assert!(bad(
        r#"{"title":"t","list":"l.csv","channel":"column","fallback":["email","sms"],
        "email":{"from":"a@example.org","subject":"s","text":"t.txt"}}"#
    )
    .contains("fallback names sms but there is no sms part"));
    assert!(bad(
        r#"{"title":"t","list":"l.csv","channel":"column","fallback":["email","email"],
        "email":{"from":"a@example.org","subject":"s","text":"t.txt"}}"#
    )
    .contains("twice"));
}

#[test]
fn a_channel_the_recipient_did_not_agree_to_falls_back_or_excludes_the_row() {
    let m = Manifest::parse(
        br#"{"title":"t","list":"l.csv","channel":"column","columns":{"id":"id"},
            "fallback":["sms","email"],
            "email":{"from":"a@example.org","subject":"Hi {{ name }}","text":"t.txt"},
            "sms":{"text":"s.txt"},
            "exclusions":{"channel_consent":{"sms":"sms ok","email":"email ok"}}}"#,
    )
    .unwrap();
    let t = template();
    let h: Vec<String> = ["id", "name", "email", "phone", "town", "sms ok", "email ok"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut v = Validator::new("d", &m, &t, &h, "DK").unwrap();
    // No consent to SMS: by email, and the report says why.
    let r = v.check(&row(
        2,
        &[
            "1",
            "Ann",
            "ann@example.org",
            "20123456",
            "Aarhus",
            "no",
            "yes",
        ],
    ));
    assert_eq!(
        r.recipient.state,
        RecipientState::Pending,
        "{:?}",
        r.problems
    );
    assert_eq!(r.recipient.channel, Some(Channel::Email));
    assert!(
        r.notices[0]
            .message
            .starts_with("from sms to email: no_consent"),
        "{:?}",
        r.notices
    );
    // Consent to neither: excluded, not invalid.
    let r = v.check(&row(
        3,
        &["2", "Bo", "bo@example.org", "20123457", "Aarhus", "no", ""],
    ));
    assert_eq!(
        r.recipient.state,
        RecipientState::Excluded,
        "{:?}",
        r.problems
    );
    assert_eq!(r.problems.len(), 1);
    assert_eq!(r.problems[0].code, codes::NO_CONSENT);
    assert_eq!(r.problems[0].column, "sms ok");
    // A word that is neither: invalid, naming the column.
    let r = v.check(&row(
        4,
        &["3", "Cy", "", "20123458", "Aarhus", "maybe", "yes"],
    ));
    assert_eq!(r.recipient.state, RecipientState::Invalid);
    assert!(
        r.problems.iter().any(|p| p.code == codes::INVALID_CONSENT),
        "{:?}",
        r.problems
    );
    // The consent columns must be in the list.
    let short: Vec<String> = ["id", "name", "email", "phone", "town"]
        .into_iter()
        .map(String::from)
        .collect();
    let e = Validator::new("d", &m, &t, &short, "DK").err().unwrap();
    assert!(
        e.iter().any(|p| p.contains("sms consent column 'sms ok'")),
        "{e:?}"
    );
}
