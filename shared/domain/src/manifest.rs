//! The upload package: a folder `incoming/<dispatch-id>/` holding the recipient list, the
//! message template files and, uploaded last, `manifest.json` naming them. The manifest's
//! arrival starts validation.

use crate::ids::DispatchId;
use crate::limits::{input as limits, truncated};
use crate::model::Channel;
use serde::{Deserialize, Serialize};

mod lengths;

/// File name whose upload starts a dispatch.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Prefix under which packages are uploaded.
pub const INCOMING_PREFIX: &str = "incoming/";

/// How each recipient's channel is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// Everyone by email.
    Email,
    /// Everyone by SMS.
    Sms,
    /// Everyone by letter.
    Letter,
    /// Per row, from the channel column (the recipient's preferred delivery method).
    Column,
}

/// Names of the list's special columns. Matching ignores case, surrounding spaces and the
/// difference between `_`, `-` and spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    pub id: String,
    pub email: String,
    pub phone: String,
    pub channel: String,
    /// The letter's addressee: the first line of the address.
    pub addressee: String,
    /// Street, building, c/o: the address lines between the addressee and the postcode and
    /// city, in order; a column the list lacks or a cell left empty prints no line.
    pub address_lines: Vec<String>,
    pub postcode: String,
    pub city: String,
    /// The country, as an ISO 3166 code (`DK`, `DEU`) or its English name; empty for the
    /// letter's home country.
    pub country: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            id: "recipient_id".into(),
            email: "email".into(),
            phone: "phone".into(),
            channel: "channel".into(),
            addressee: "name".into(),
            address_lines: vec!["address".into(), "address_2".into()],
            postcode: "postcode".into(),
            city: "city".into(),
            country: "country".into(),
        }
    }
}

/// A letter: its text, and the organisation's layout around it (DIN 5008, form B).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LetterPart {
    /// Subject line template (merge fields allowed), in bold above the text.
    pub subject: String,
    /// File in the package holding the letter's text: Markdown (paragraphs, **bold**,
    /// *italic*, lists) with merge fields.
    pub text: String,
    /// The organisation sending it (the PDF's author).
    pub sender: String,
    /// Language of the layout's own words (date, page numbers): `en`, `da` or `de`.
    #[serde(default)]
    pub lang: Option<String>,
    /// The small line above the address for returns, e.g. `Town Hall · Main St 1 · 1000 City`.
    #[serde(default)]
    pub return_address: Option<String>,
    /// Lines at the top left of the first page.
    #[serde(default)]
    pub letterhead: Vec<String>,
    /// File in the package: the logo at the top right (`.png`, `.jpg` or `.svg`).
    #[serde(default)]
    pub logo: Option<String>,
    /// Lines at the foot of every page.
    #[serde(default)]
    pub footer: Vec<String>,
    /// Above the signature, e.g. `Kind regards`.
    #[serde(default)]
    pub closing: Option<String>,
    /// The signature block's lines (name, title).
    #[serde(default)]
    pub signature: Vec<String>,
    /// Country (ISO 3166 alpha-2) the letters are posted in: an address there prints no
    /// country line. The dispatch's phone region when absent.
    #[serde(default)]
    pub home_country: Option<String>,
    /// Columns the print files are sorted by, in order (numbers compare as numbers); the
    /// postcode column, then the addressee's, when absent.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Letters per print file (part); 500 when absent.
    #[serde(default)]
    pub part_letters: Option<u32>,
}

impl LetterPart {
    /// The columns print files are sorted by.
    pub fn sort_columns(&self, columns: &Columns) -> Vec<String> {
        if self.sort_by.is_empty() {
            vec![columns.postcode.clone(), columns.addressee.clone()]
        } else {
            self.sort_by.clone()
        }
    }

    pub fn letters_per_part(&self) -> u32 {
        self.part_letters
            .unwrap_or(crate::print::DEFAULT_PART_LETTERS)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailPart {
    /// Sender, e.g. `Town Hall <noreply@example.org>`; its domain must be a verified identity.
    pub from: String,
    /// Subject line template (merge fields allowed).
    pub subject: String,
    /// File in the package holding the plain-text body template.
    pub text: String,
    /// Optional file in the package holding the HTML body template.
    #[serde(default)]
    pub html: Option<String>,
    /// Optional PDF in the package attached to every email of the dispatch.
    #[serde(default)]
    pub attachment: Option<String>,
    /// Attach each recipient's own letter (the dispatch's letter part, typeset for them) as
    /// a PDF.
    #[serde(default)]
    pub attach_letter: bool,
    /// Addresses every email is blind-copied to: in the envelope only, never in a header.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Where replies go, when not to the sender.
    #[serde(default)]
    pub reply_to: Vec<String>,
    /// A mailing people may leave: each email carries a one-click unsubscribe link
    /// (RFC 8058) that puts its address on the suppression list.
    #[serde(default)]
    pub unsubscribe: bool,
}

/// Most Bcc addresses per email: SES takes at most 50 destinations per message.
pub const MAX_BCC: usize = 10;
/// Most reply-to addresses.
pub const MAX_REPLY_TO: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsPart {
    /// File in the package holding the SMS text template.
    pub text: String,
    /// Alphanumeric sender id, where the destination country supports it.
    #[serde(default)]
    pub sender_id: Option<String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Title shown to operators.
    pub title: String,
    /// File name of the recipient list in the package (`.csv`, `.tsv`, `.txt`, `.xlsx`,
    /// `.xlsm`, `.xls`, `.ods`).
    pub list: String,
    /// Worksheet to read; the first one when absent.
    #[serde(default)]
    pub sheet: Option<String>,
    /// Text encoding of a CSV list (`utf-8`, `windows-1252`, `iso-8859-1`, `utf-16le` …);
    /// detected when absent.
    #[serde(default)]
    pub encoding: Option<String>,
    pub channel: ChannelMode,
    #[serde(default)]
    pub columns: Columns,
    #[serde(default)]
    pub email: Option<EmailPart>,
    #[serde(default)]
    pub sms: Option<SmsPart>,
    #[serde(default)]
    pub letter: Option<LetterPart>,
    /// Region (ISO 3166 alpha-2) for phone numbers written without a country code; the
    /// deployment's default when absent.
    #[serde(default)]
    pub phone_region: Option<String>,
    /// Valid rows this dispatch leaves out (status codes, missing consent).
    #[serde(default)]
    pub exclusions: Exclusions,
    /// With `channel: column`: the channels in order of preference. A row's preferred
    /// channel is its channel cell, or the first of these; a row its preferred channel
    /// cannot reach (no address, an invalid one, no message for it) goes by the next that
    /// can, and the report says so.
    #[serde(default)]
    pub fallback: Vec<Channel>,
}

/// Rules that leave valid rows out of a dispatch. An excluded row is recorded as `excluded`
/// with the rule and the value, and is reported; it is never sent to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusions {
    /// Column holding a status code per recipient (e.g. a person register's status).
    #[serde(default)]
    pub status_column: Option<String>,
    /// Codes in that column that exclude the row (e.g. "80" emigrated, "90" dead).
    #[serde(default)]
    pub excluded_codes: Vec<String>,
    /// Column saying whether the recipient agreed to be contacted: yes, y, true, 1, ja, x
    /// send; no, n, false, 0, nej or an empty cell exclude; anything else is invalid.
    #[serde(default)]
    pub consent_column: Option<String>,
    /// Per channel, a column saying whether the recipient agreed to be contacted that way
    /// (the same words as `consent_column`), e.g. `{"sms": "sms_ok"}`. A row without consent
    /// for its channel goes by the next of the fallback order it agreed to; without one it
    /// is excluded (`no_consent`).
    #[serde(default)]
    pub channel_consent: std::collections::BTreeMap<Channel, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest.json is not valid: {0}")]
    Syntax(String),
    #[error("manifest.json: {0}")]
    Invalid(String),
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > limits::MANIFEST_BYTES {
            return Err(ManifestError::Invalid(format!(
                "the file is {} bytes; at most {} are accepted",
                bytes.len(),
                limits::MANIFEST_BYTES
            )));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            ManifestError::Syntax(truncated(&e.to_string(), limits::DETAIL_CHARS).into_owned())
        })?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let bad = |s: &str| Err(ManifestError::Invalid(s.to_string()));
        self.check_lengths()?;
        if self.title.trim().is_empty() {
            return bad("title must not be empty");
        }
        check_file_name("list", &self.list)?;
        if let Some(label) = &self.encoding {
            if encoding_for(label).is_none() {
                return Err(ManifestError::Invalid(format!(
                    "encoding '{label}' is not a known text encoding (e.g. utf-8, windows-1252, iso-8859-1)"
                )));
            }
        }
        if ListFormat::from_name(&self.list).is_none() {
            return Err(ManifestError::Invalid(format!(
                "list '{}' must end in .csv, .tsv, .txt, .xlsx, .xlsm, .xls or .ods",
                self.list
            )));
        }
        match self.channel {
            ChannelMode::Email if self.email.is_none() => {
                return bad("channel is email but there is no email part")
            }
            ChannelMode::Sms if self.sms.is_none() => {
                return bad("channel is sms but there is no sms part")
            }
            ChannelMode::Letter if self.letter.is_none() => {
                return bad("channel is letter but there is no letter part")
            }
            ChannelMode::Column
                if self.email.is_none() && self.sms.is_none() && self.letter.is_none() =>
            {
                return bad("channel is column but there is no email, sms or letter part")
            }
            _ => {}
        }
        if let Some(e) = &self.email {
            check_file_name("email.text", &e.text)?;
            if let Some(h) = &e.html {
                check_file_name("email.html", h)?;
            }
            if e.subject.trim().is_empty() {
                return bad("email.subject must not be empty");
            }
            if e.subject.contains(['\r', '\n']) {
                return bad("email.subject must be one line");
            }
            if e.from.trim().is_empty() {
                return bad("email.from must not be empty");
            }
            if let Some(a) = &e.attachment {
                check_file_name("email.attachment", a)?;
                if !a.to_ascii_lowercase().ends_with(".pdf") {
                    return bad("email.attachment must be a .pdf file");
                }
            }
            if e.attach_letter && self.letter.is_none() {
                return bad("email.attach_letter needs a letter part to typeset");
            }
            if e.bcc.len() > MAX_BCC {
                return Err(ManifestError::Invalid(format!(
                    "email.bcc lists {} addresses; at most {MAX_BCC} are accepted",
                    e.bcc.len()
                )));
            }
            if e.reply_to.len() > MAX_REPLY_TO {
                return Err(ManifestError::Invalid(format!(
                    "email.reply_to lists {} addresses; at most {MAX_REPLY_TO} are accepted",
                    e.reply_to.len()
                )));
            }
            for (field, list) in [("email.bcc", &e.bcc), ("email.reply_to", &e.reply_to)] {
                if let Some(bad_one) = list
                    .iter()
                    .find(|a| !email_address::EmailAddress::is_valid(a.trim()))
                {
                    return Err(ManifestError::Invalid(format!(
                        "{field} holds '{bad_one}', which is not an email address"
                    )));
                }
            }
        }
        if let Some(s) = &self.sms {
            check_file_name("sms.text", &s.text)?;
        }
        if let Some(l) = &self.letter {
            check_file_name("letter.text", &l.text)?;
            if l.subject.trim().is_empty() {
                return bad("letter.subject must not be empty");
            }
            if l.subject.contains(['\r', '\n']) {
                return bad("letter.subject must be one line");
            }
            if l.sender.trim().is_empty() {
                return bad("letter.sender must not be empty");
            }
            if let Some(lang) = &l.lang {
                if !["en", "da", "de"].contains(&lang.trim().to_ascii_lowercase().as_str()) {
                    return bad("letter.lang must be en, da or de");
                }
            }
            if let Some(logo) = &l.logo {
                check_file_name("letter.logo", logo)?;
                let ext = logo.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
                if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "svg")) {
                    return bad("letter.logo must be a .png, .jpg or .svg file");
                }
            }
            if let Some(r) = &l.home_country {
                if r.len() != 2 || !r.chars().all(|c| c.is_ascii_alphabetic()) {
                    return bad("letter.home_country must be a two-letter country code such as DK");
                }
            }
            if let Some(n) = l.part_letters {
                if !(1..=crate::print::MAX_PART_LETTERS).contains(&n) {
                    return Err(ManifestError::Invalid(format!(
                        "letter.part_letters must be from 1 to {}",
                        crate::print::MAX_PART_LETTERS
                    )));
                }
            }
            if self.columns.postcode.trim().is_empty() || self.columns.city.trim().is_empty() {
                return bad("columns.postcode and columns.city must name columns for letters");
            }
        }
        if !self.fallback.is_empty() {
            if self.channel != ChannelMode::Column {
                return bad("fallback needs channel: column (each row's channel, then the next)");
            }
            let mut seen = Vec::new();
            for c in &self.fallback {
                if seen.contains(c) {
                    return Err(ManifestError::Invalid(format!("fallback names {c} twice")));
                }
                seen.push(*c);
                let has = match c {
                    Channel::Email => self.email.is_some(),
                    Channel::Sms => self.sms.is_some(),
                    Channel::Letter => self.letter.is_some(),
                };
                if !has {
                    return Err(ManifestError::Invalid(format!(
                        "fallback names {c} but there is no {c} part"
                    )));
                }
            }
        }
        let x = &self.exclusions;
        if x.status_column.is_some() == x.excluded_codes.is_empty() {
            return bad("exclusions.status_column and exclusions.excluded_codes go together");
        }
        if x.excluded_codes.iter().any(|c| c.trim().is_empty()) {
            return bad("exclusions.excluded_codes must not hold an empty code");
        }
        if let Some(r) = &self.phone_region {
            if r.len() != 2 || !r.chars().all(|c| c.is_ascii_alphabetic()) {
                return bad("phone_region must be a two-letter country code such as DK or GB");
            }
        }
        Ok(())
    }

    /// Channels this dispatch can send on.
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        if self.email.is_some() && matches!(self.channel, ChannelMode::Email | ChannelMode::Column)
        {
            out.push(Channel::Email);
        }
        let only = |c: ChannelMode| self.channel == c || self.channel == ChannelMode::Column;
        if self.sms.is_some() && only(ChannelMode::Sms) {
            out.push(Channel::Sms);
        }
        if self.letter.is_some() && only(ChannelMode::Letter) {
            out.push(Channel::Letter);
        }
        out
    }
}

fn check_file_name(what: &str, name: &str) -> Result<(), ManifestError> {
    if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." {
        return Err(ManifestError::Invalid(format!(
            "{what} must be a file name in the same folder, got '{name}'"
        )));
    }
    Ok(())
}

/// The dispatch id and folder of an uploaded manifest key, or why the key is not one.
pub fn dispatch_of_key(key: &str) -> Result<DispatchId, String> {
    let rest = key
        .strip_prefix(INCOMING_PREFIX)
        .ok_or_else(|| format!("'{key}' is not under {INCOMING_PREFIX}"))?;
    let (id, file) = rest
        .split_once('/')
        .ok_or_else(|| format!("'{key}' is not in a dispatch folder"))?;
    if file != MANIFEST_FILE {
        return Err(format!("'{key}' is not a {MANIFEST_FILE}"));
    }
    DispatchId::parse(id)
}

/// The format of a list, named by its file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Csv,
    Workbook,
}

impl ListFormat {
    /// The format named by a file's extension.
    pub fn from_name(name: &str) -> Option<ListFormat> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            // Delimited text: the delimiter is found from the text, not the name.
            "csv" | "tsv" | "txt" => Some(ListFormat::Csv),
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(ListFormat::Workbook),
            _ => None,
        }
    }
}

/// The text encoding a label names (WHATWG labels: `utf-8`, `windows-1252`, `latin1`,
/// `iso-8859-1`, `utf-16le` …).
pub fn encoding_for(label: &str) -> Option<&'static encoding_rs::Encoding> {
    encoding_rs::Encoding::for_label(label.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "title": "Winter notice",
        "list": "recipients.xlsx",
        "channel": "column",
        "columns": {"id": "CPR"},
        "email": {"from": "Town Hall <noreply@example.org>", "subject": "Hello {{ name }}", "text": "email.txt"},
        "sms": {"text": "sms.txt"}
    }"#;

    #[test]
    fn parses_a_full_manifest_with_defaults() {
        let m = Manifest::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(m.columns.id, "CPR");
        assert_eq!(m.columns.email, "email");
        assert_eq!(m.channels(), vec![Channel::Email, Channel::Sms]);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_parts() {
        let e = Manifest::parse(br#"{"title":"t","list":"a.csv","channel":"email","colour":1}"#)
            .unwrap_err();
        assert!(
            matches!(e, ManifestError::Syntax(ref s) if s.contains("colour")),
            "{e}"
        );
        let e = Manifest::parse(br#"{"title":"t","list":"a.csv","channel":"email"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "manifest.json: channel is email but there is no email part"
        );
        let e = Manifest::parse(
            br#"{"title":"t","list":"a.pdf","channel":"sms","sms":{"text":"s.txt"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("must end in .csv"), "{e}");
        let e = Manifest::parse(
            br#"{"title":"t","list":"../a.csv","channel":"sms","sms":{"text":"s.txt"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("same folder"), "{e}");
        assert!(Manifest::parse(b"not json").is_err());
    }

    #[test]
    fn a_letter_part_is_checked_and_makes_letter_a_channel() {
        let letter = r#"{"title":"t","list":"a.csv","channel":"letter",
            "letter":{"subject":"About {{ name }}","text":"letter.md","sender":"Town Hall",
                      "lang":"da","logo":"logo.svg","signature":["Ann","Mayor"]}}"#;
        let m = Manifest::parse(letter.as_bytes()).unwrap();
        assert_eq!(m.channels(), vec![Channel::Letter]);
        assert_eq!(m.columns.addressee, "name");
        assert_eq!(m.columns.address_lines, ["address", "address_2"]);
        let refused = |from: &str, to: &str| {
            Manifest::parse(letter.replace(from, to).as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(refused("\"lang\":\"da\"", "\"lang\":\"fr\"").contains("letter.lang"));
        assert!(refused("logo.svg", "logo.gif").contains(".png, .jpg or .svg"));
        assert!(refused("\"sender\":\"Town Hall\"", "\"sender\":\" \"").contains("letter.sender"));
        assert!(refused("About {{ name }}", "").contains("letter.subject"));
        let many = format!("[{}]", ["\"x\""; 11].join(","));
        assert!(refused("[\"Ann\",\"Mayor\"]", &many).contains("at most 10"));
        let e = Manifest::parse(br#"{"title":"t","list":"a.csv","channel":"letter"}"#).unwrap_err();
        assert!(e.to_string().contains("no letter part"), "{e}");
        // Chosen per row, every part there is can be used.
        let column = letter.replace("\"channel\":\"letter\"", "\"channel\":\"column\"");
        let column = column.replacen(
            "\"letter\":{",
            "\"sms\":{\"text\":\"s.txt\"},\"letter\":{",
            1,
        );
        let m = Manifest::parse(column.as_bytes()).unwrap();
        assert_eq!(m.channels(), vec![Channel::Sms, Channel::Letter]);
    }

    #[test]
    fn every_value_is_bounded_and_no_refusal_quotes_an_unbounded_one() {
        let good: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        let with = |pointer: &str, value: serde_json::Value| {
            let mut v = good.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            v.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}"))[key] = value;
            Manifest::parse(&serde_json::to_vec(&v).unwrap())
        };
        let long = |n: usize| serde_json::Value::String("x".repeat(n));
        for (pointer, field, max) in [
            ("/title", "title", limits::TITLE_CHARS),
            ("/columns/id", "columns.id", limits::MANIFEST_COLUMN_CHARS),
            ("/email/from", "email.from", limits::FROM_CHARS),
            ("/email/subject", "email.subject", limits::SUBJECT_CHARS),
        ] {
            assert!(with(pointer, long(max)).is_ok(), "{field} at its limit");
            let e = with(pointer, long(max + 1)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "manifest.json: {field} is {} characters long; at most {max} are accepted",
                    max + 1
                )
            );
        }
        let e = with(
            "/list",
            serde_json::json!(format!("{}.csv", "l".repeat(300))),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("list is a file name of 304 bytes; at most 255"),
            "{e}"
        );
        let e = with(
            "/sms",
            serde_json::json!({"text": "s.txt", "sender_id": "TOWNHALLOFFICE"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sms.sender_id is 14 characters long; at most 11"),
            "{e}"
        );
        let codes: Vec<String> = (0..=limits::EXCLUDED_CODES)
            .map(|i| i.to_string())
            .collect();
        let e = with(
            "/exclusions",
            serde_json::json!({"status_column": "status", "excluded_codes": codes}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lists 1001 codes; at most 1000"), "{e}");
        // An unknown field with a huge name: the syntax error is cut short.
        let mut v = good.clone();
        v["x".repeat(100_000)] = serde_json::json!(1);
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.chars().count() < limits::DETAIL_CHARS + 50,
            "{} characters",
            e.len()
        );
        // The file as a whole.
        let big = format!("{}{}", " ".repeat(limits::MANIFEST_BYTES), GOOD);
        let e = Manifest::parse(big.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("at most 65536 are accepted"), "{e}");
    }

    #[test]
    fn subject_with_a_line_break_is_refused() {
        let e = Manifest::parse(
            br#"{"title":"t","list":"a.csv","channel":"email","email":{"from":"a@b.c","subject":"x\nBcc: evil@x","text":"e.txt"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("one line"), "{e}");
    }

    #[test]
    fn dispatch_id_comes_from_the_folder() {
        assert_eq!(
            dispatch_of_key("incoming/winter-2026/manifest.json")
                .unwrap()
                .as_str(),
            "winter-2026"
        );
        assert!(dispatch_of_key("incoming/winter-2026/list.csv").is_err());
        assert!(dispatch_of_key("other/x/manifest.json").is_err());
        assert!(dispatch_of_key("incoming/a b/manifest.json").is_err());
        assert!(dispatch_of_key("incoming/x/y/manifest.json").is_err());
    }

    #[test]
    fn an_unknown_encoding_is_refused_by_name() {
        let e = Manifest::parse(
            br#"{"title":"t","list":"a.csv","channel":"sms","sms":{"text":"s.txt"},"encoding":"ebcdic-x"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("encoding 'ebcdic-x'"), "{e}");
        let m = Manifest::parse(
            br#"{"title":"t","list":"a.csv","channel":"sms","sms":{"text":"s.txt"},"encoding":"windows-1252"}"#,
        )
        .unwrap();
        assert_eq!(m.encoding.as_deref(), Some("windows-1252"));
    }
}
