//! Row and header checks. Every row becomes a [`Recipient`]: pending when it can be sent,
//! invalid with its problems otherwise. Nothing is dropped.

use crate::list::{normalise_header, ListReader, RawRow};
use crate::template::MessageTemplate;
use domain::manifest::{ChannelMode, Manifest};
use domain::model::{Channel, Recipient, RecipientState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

/// One problem with one row: a line of the validation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub line: u64,
    pub recipient_id: String,
    pub column: String,
    pub code: &'static str,
    pub message: String,
}

/// Rows after which a CSV list's row count is estimated from its size.
pub const ESTIMATE_AFTER: u64 = 1000;

/// Codes used in the report, one per rule.
pub mod codes {
    pub const MISSING_ID: &str = "missing_id";
    pub const DUPLICATE_ID: &str = "duplicate_id";
    pub const DUPLICATE_ADDRESS: &str = "duplicate_address";
    pub const UNKNOWN_CHANNEL: &str = "unknown_channel";
    pub const NO_TEMPLATE_FOR_CHANNEL: &str = "no_template_for_channel";
    pub const MISSING_ADDRESS: &str = "missing_address";
    pub const INVALID_EMAIL: &str = "invalid_email";
    pub const INVALID_PHONE: &str = "invalid_phone";
    pub const MISSING_VALUE: &str = "missing_value";
    pub const RENDER_FAILED: &str = "render_failed";
    pub const UNREADABLE_ROW: &str = "unreadable_row";
    pub const EXTRA_VALUES: &str = "extra_values";
    /// Not a problem with the row: its address is on the suppression list.
    pub const SUPPRESSED: &str = "suppressed";
    /// Not a problem with the row: its status code is one the dispatch excludes.
    pub const EXCLUDED_STATUS: &str = "excluded_status";
    /// Not a problem with the row: the recipient has not agreed to be contacted.
    pub const NO_CONSENT: &str = "no_consent";
    pub const INVALID_CONSENT: &str = "invalid_consent";
}

/// Leaves a valid row out because its address is on the suppression list: the row becomes
/// `excluded` with the reason, and one report line says why.
pub fn exclude_suppressed(
    checked: &mut Checked,
    entry: &domain::suppression::Suppression,
    columns: &domain::manifest::Columns,
) {
    let r = &mut checked.recipient;
    let column = match r.channel {
        Some(Channel::Sms) => &columns.phone,
        _ => &columns.email,
    };
    let message = format!(
        "the address is on the suppression list: {} on {}{}",
        entry.reason,
        entry.at,
        entry
            .detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    r.state = RecipientState::Excluded;
    r.reason = Some(format!("{}: {message}", codes::SUPPRESSED));
    checked.problems.push(Problem {
        line: r.line,
        recipient_id: r.recipient_id.clone(),
        column: column.clone(),
        code: codes::SUPPRESSED,
        message,
    });
}

/// Checks rows of one list against one dispatch's manifest and templates.
pub struct Validator<'a> {
    manifest: &'a Manifest,
    template: &'a MessageTemplate,
    dispatch_id: String,
    /// Normalised header names, in column order.
    names: Vec<String>,
    id_col: usize,
    email_col: Option<usize>,
    phone_col: Option<usize>,
    channel_col: Option<usize>,
    status_col: Option<usize>,
    consent_col: Option<usize>,
    region: phonenumber::country::Id,
    /// Merge fields each channel's template uses, with their columns (worked out once).
    email_fields: Vec<(String, Option<usize>)>,
    sms_fields: Vec<(String, Option<usize>)>,
    /// Fingerprints (128-bit hashes) of the ids and addresses seen: 16 bytes a row rather
    /// than the strings, so a million-row list stays small.
    seen_ids: Fingerprints,
    seen_addresses: Fingerprints,
}

fn fingerprint(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// The fingerprint of a channel's address, without regard to case.
/// The fingerprint of `channel:address` in lower case. A short ASCII address (nearly all of
/// them) is lowered on the stack; both ways give the same fingerprint.
fn address_fingerprint(channel: Channel, address: &str) -> u128 {
    let tag = channel.as_str().as_bytes();
    let n = tag.len() + 1 + address.len();
    let mut buf = [0u8; 160];
    if address.is_ascii() && n <= buf.len() {
        buf[..tag.len()].copy_from_slice(tag);
        buf[tag.len()] = b':';
        buf[tag.len() + 1..n].copy_from_slice(address.as_bytes());
        buf[..n].make_ascii_lowercase();
        xxhash_rust::xxh3::xxh3_128(&buf[..n])
    } else {
        fingerprint(&format!("{channel}:{}", address.to_lowercase()))
    }
}

/// A set of fingerprints. They are hashes already, so the set uses their low bits as they
/// are instead of hashing them again.
type Fingerprints = HashSet<u128, std::hash::BuildHasherDefault<LowBits>>;

#[derive(Default)]
struct LowBits(u64);

impl std::hash::Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; other input is folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// A row's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub recipient: Recipient,
    pub problems: Vec<Problem>,
    /// False when the row cannot be keyed by its id (missing or repeated id).
    pub keyed_by_id: bool,
    /// The length of a valid SMS row's message.
    pub segments: Option<crate::sms::Segments>,
}

fn columns_of(
    template: &MessageTemplate,
    channel: Channel,
    names: &[String],
) -> Vec<(String, Option<usize>)> {
    template
        .fields(channel)
        .into_iter()
        .map(|f| {
            let col = names.iter().position(|n| *n == f);
            (f, col)
        })
        .collect()
}

fn find(names: &[String], wanted: &str) -> Option<usize> {
    let w = normalise_header(wanted);
    names.iter().position(|n| *n == w)
}

impl<'a> Validator<'a> {
    /// Checks the header row. Errors are file-level problems: the dispatch cannot go on.
    pub fn new(
        dispatch_id: &str,
        manifest: &'a Manifest,
        template: &'a MessageTemplate,
        headers: &[String],
        default_region: &str,
    ) -> Result<Validator<'a>, Vec<String>> {
        let names: Vec<String> = headers.iter().map(|h| normalise_header(h)).collect();
        let mut problems = Vec::new();
        let cols = &manifest.columns;
        let id_col = find(&names, &cols.id);
        if id_col.is_none() {
            problems.push(format!(
                "the list has no '{}' column (recipient id)",
                cols.id
            ));
        }
        let channels = manifest.channels();
        let email_col = find(&names, &cols.email);
        let phone_col = find(&names, &cols.phone);
        let channel_col = find(&names, &cols.channel);
        if channels.contains(&Channel::Email)
            && email_col.is_none()
            && manifest.channel == ChannelMode::Email
        {
            problems.push(format!(
                "the list has no '{}' column (email address)",
                cols.email
            ));
        }
        if channels.contains(&Channel::Sms)
            && phone_col.is_none()
            && manifest.channel == ChannelMode::Sms
        {
            problems.push(format!(
                "the list has no '{}' column (phone number)",
                cols.phone
            ));
        }
        if manifest.channel == ChannelMode::Column {
            if channel_col.is_none() {
                problems.push(format!(
                    "channel is chosen per row but the list has no '{}' column",
                    cols.channel
                ));
            }
            if email_col.is_none() && phone_col.is_none() {
                problems.push(format!(
                    "the list has neither a '{}' nor a '{}' column",
                    cols.email, cols.phone
                ));
            }
        }
        let x = &manifest.exclusions;
        let status_col = x.status_column.as_deref().and_then(|c| find(&names, c));
        if let (Some(c), None) = (&x.status_column, status_col) {
            problems.push(format!(
                "exclusions name the status column '{c}' but the list has no such column"
            ));
        }
        let consent_col = x.consent_column.as_deref().and_then(|c| find(&names, c));
        if let (Some(c), None) = (&x.consent_column, consent_col) {
            problems.push(format!(
                "exclusions name the consent column '{c}' but the list has no such column"
            ));
        }
        let mut missing: Vec<String> = Vec::new();
        for ch in &channels {
            for f in template.fields(*ch) {
                if !names.contains(&f) && !missing.contains(&f) {
                    missing.push(f);
                }
            }
        }
        if !missing.is_empty() {
            problems.push(format!(
                "the template uses merge fields that are not columns of the list: {}",
                missing.join(", ")
            ));
        }
        let region_code = manifest.phone_region.as_deref().unwrap_or(default_region);
        let region = phonenumber::country::Id::from_str(&region_code.to_ascii_uppercase())
            .map_err(|_| vec![format!("'{region_code}' is not a known phone region")])?;
        match (problems.is_empty(), id_col) {
            (true, Some(id_col)) => Ok(Validator {
                manifest,
                template,
                dispatch_id: dispatch_id.to_string(),
                id_col,
                email_col,
                phone_col,
                channel_col,
                status_col,
                consent_col,
                region,
                email_fields: columns_of(template, Channel::Email, &names),
                sms_fields: columns_of(template, Channel::Sms, &names),
                names,
                seen_ids: Fingerprints::default(),
                seen_addresses: Fingerprints::default(),
            }),
            _ => Err(problems),
        }
    }

    /// Makes room for the whole list's ids and addresses at once, so the sets do not grow by
    /// doubling with both copies in memory: before the first row from the rows a sheet
    /// declares, after `ESTIMATE_AFTER` rows of a CSV list from its size (`file_size`) and
    /// how far those rows reached. Call it before checking row number `rows_read + 1`.
    pub fn presize(&mut self, reader: &ListReader, file_size: u64, rows_read: u64, max_rows: u64) {
        let rest = match (rows_read, reader.declared_rows(), reader.progress()) {
            (0, Some(declared), _) => declared,
            (ESTIMATE_AFTER, None, Some(read)) if read > 0 => file_size
                .saturating_mul(ESTIMATE_AFTER)
                .checked_div(read)
                .unwrap_or(0)
                .saturating_sub(ESTIMATE_AFTER),
            _ => return,
        };
        let rest = rest.min(max_rows) as usize;
        self.seen_ids.reserve(rest);
        self.seen_addresses.reserve(rest);
    }

    /// A row that could not even be read still becomes an invalid recipient.
    pub fn unreadable(&self, line: u64, message: &str) -> Checked {
        let recipient = self.recipient(line, String::new(), None, None, BTreeMap::new());
        self.finish(
            recipient,
            vec![Problem {
                line,
                recipient_id: String::new(),
                column: String::new(),
                code: codes::UNREADABLE_ROW,
                message: message.to_string(),
            }],
            false,
        )
    }

    fn recipient(
        &self,
        line: u64,
        recipient_id: String,
        channel: Option<Channel>,
        address: Option<String>,
        fields: BTreeMap<String, String>,
    ) -> Recipient {
        Recipient {
            channel,
            address,
            fields,
            ..Recipient::pending(&self.dispatch_id, &recipient_id, line)
        }
    }

    fn finish(
        &self,
        mut recipient: Recipient,
        problems: Vec<Problem>,
        keyed_by_id: bool,
    ) -> Checked {
        if !problems.is_empty() {
            recipient.state = RecipientState::Invalid;
            recipient.reason = Some(
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.code, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        Checked {
            recipient,
            problems,
            keyed_by_id,
            segments: None,
        }
    }

    pub fn check(&mut self, row: &RawRow) -> Checked {
        let cell = |i: Option<usize>| -> &str { i.and_then(|i| row.cell(i)).unwrap_or("") };
        let line = row.line;
        let id = cell(Some(self.id_col)).to_string();
        let mut problems = Vec::new();
        macro_rules! problem {
            ($column:expr, $code:expr, $message:expr $(,)?) => {
                problems.push(Problem {
                    line,
                    recipient_id: id.clone(),
                    column: ($column).to_string(),
                    code: $code,
                    message: $message,
                })
            };
        }
        let cols = &self.manifest.columns;

        let mut keyed_by_id = true;
        if id.is_empty() {
            problem!(
                &cols.id,
                codes::MISSING_ID,
                "the recipient id is empty".into()
            );
            keyed_by_id = false;
        } else if !self.seen_ids.insert(fingerprint(&id)) {
            problem!(
                &cols.id,
                codes::DUPLICATE_ID,
                format!("recipient id '{id}' appears earlier in the list; the first is kept"),
            );
            keyed_by_id = false;
        }

        let email = cell(self.email_col);
        let phone = cell(self.phone_col);
        let channel = match self.manifest.channel {
            ChannelMode::Email => Some(Channel::Email),
            ChannelMode::Sms => Some(Channel::Sms),
            ChannelMode::Column => {
                let wanted = cell(self.channel_col);
                if wanted.is_empty() {
                    // No preference: email when there is an address, otherwise SMS.
                    if !email.is_empty() && self.template.has(Channel::Email) {
                        Some(Channel::Email)
                    } else if !phone.is_empty() && self.template.has(Channel::Sms) {
                        Some(Channel::Sms)
                    } else {
                        problem!(
                            &cols.channel,
                            codes::MISSING_ADDRESS,
                            "no channel is given and there is no email address or phone number"
                                .into(),
                        );
                        None
                    }
                } else {
                    match Channel::from_str(wanted) {
                        Ok(c) => Some(c),
                        Err(m) => {
                            problem!(&cols.channel, codes::UNKNOWN_CHANNEL, m);
                            None
                        }
                    }
                }
            }
        };
        if let Some(c) = channel {
            if !self.template.has(c) {
                problem!(
                    &cols.channel,
                    codes::NO_TEMPLATE_FOR_CHANNEL,
                    format!("the recipient prefers {c} but this dispatch has no {c} message"),
                );
            }
        }

        let address = match channel {
            Some(Channel::Email) => match check_email(email) {
                Ok(a) => Some(a),
                Err((code, m)) => {
                    problem!(&cols.email, code, m);
                    None
                }
            },
            Some(Channel::Sms) => match check_phone(phone, self.region) {
                Ok(a) => Some(a),
                Err((code, m)) => {
                    problem!(&cols.phone, code, m);
                    None
                }
            },
            None => None,
        };
        if let (Some(c), Some(a)) = (channel, &address) {
            if !self.seen_addresses.insert(address_fingerprint(c, a)) {
                problem!(
                    if c == Channel::Email {
                        &cols.email
                    } else {
                        &cols.phone
                    },
                    codes::DUPLICATE_ADDRESS,
                    format!("{a} appears earlier in the list; the first is kept"),
                );
            }
        }

        // Merge fields: every field the channel's template uses must have a value.
        let mut fields = BTreeMap::new();
        if let Some(c) = channel.filter(|c| self.template.has(*c)) {
            let used = match c {
                Channel::Email => &self.email_fields,
                Channel::Sms => &self.sms_fields,
            };
            for (f, col) in used {
                let v = col
                    .and_then(|i| row.cell(i))
                    .map(str::to_string)
                    .unwrap_or_default();
                if v.is_empty() {
                    problem!(
                        f,
                        codes::MISSING_VALUE,
                        format!("'{f}' is empty but the message uses it"),
                    );
                }
                fields.insert(f.clone(), v);
            }
        }

        // A row with more values than the header has columns is usually one where an
        // unquoted delimiter (a comma in a name) moved the values after it.
        if row.len() > self.names.len() {
            let mut extra = row.cells().skip(self.names.len()).filter(|c| !c.is_empty());
            let first = extra.next();
            let filled = first.map_or(0, |_| 1 + extra.count());
            if let Some(first) = first {
                problem!(
                    "",
                    codes::EXTRA_VALUES,
                    format!(
                        "the row has {} values after the last column ('{}'); a value with the delimiter in it must be quoted",
                        filled, first
                    ),
                );
            }
        }

        // Render once now so that rendering cannot fail at send time.
        let mut segments = None;
        if problems.is_empty() {
            let rendered = match channel {
                Some(Channel::Email) => self.template.render_email(&fields).map(|_| ()),
                Some(Channel::Sms) => self
                    .template
                    .render_sms(&fields)
                    .map(|m| segments = Some(crate::sms::segments(&m.text))),
                None => Ok(()),
            };
            if let Err(e) = rendered {
                problem!("", codes::RENDER_FAILED, e.to_string());
            }
        }

        // Exclusions apply to rows that are otherwise valid; a consent cell that says
        // neither yes nor no is a problem of its own.
        let mut excluded: Option<Problem> = None;
        let exclude = |column: &str, code: &'static str, message: String| Problem {
            line,
            recipient_id: id.clone(),
            column: column.to_string(),
            code,
            message,
        };
        let x = &self.manifest.exclusions;
        if let (Some(col), Some(name)) = (self.consent_col, x.consent_column.as_deref()) {
            match consent(cell(Some(col))) {
                Some(true) => {}
                Some(false) => {
                    excluded = Some(exclude(
                        name,
                        codes::NO_CONSENT,
                        format!(
                            "the recipient has not agreed to be contacted ('{}')",
                            cell(Some(col))
                        ),
                    ))
                }
                None => problem!(
                    name,
                    codes::INVALID_CONSENT,
                    format!(
                        "'{}' is neither yes nor no (yes, y, true, 1, ja, x / no, n, false, 0, nej, empty)",
                        cell(Some(col))
                    ),
                ),
            }
        }
        if let (Some(col), Some(name)) = (self.status_col, x.status_column.as_deref()) {
            let status = cell(Some(col)).trim();
            if x.excluded_codes.iter().any(|c| c.trim() == status) {
                excluded = Some(exclude(
                    name,
                    codes::EXCLUDED_STATUS,
                    format!("status code {status} is excluded from this dispatch"),
                ));
            }
        }

        let recipient = self.recipient(line, id.clone(), channel, address, fields);
        let mut checked = self.finish(recipient, problems, keyed_by_id);
        checked.segments = segments.filter(|_| checked.problems.is_empty());
        if let (true, Some(p)) = (checked.problems.is_empty(), excluded) {
            checked.recipient.state = RecipientState::Excluded;
            checked.recipient.reason = Some(format!("{}: {}", p.code, p.message));
            checked.problems.push(p);
        }
        checked
    }
}

/// What a consent cell says: `Some(true)` yes, `Some(false)` no (an empty cell is no),
/// `None` neither.
pub fn consent(raw: &str) -> Option<bool> {
    match raw.trim().to_lowercase().as_str() {
        "yes" | "y" | "true" | "1" | "ja" | "j" | "x" => Some(true),
        "no" | "n" | "false" | "0" | "nej" | "" => Some(false),
        _ => None,
    }
}

/// A usable email address, trimmed, with the domain in lower case.
pub fn check_email(raw: &str) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Err((codes::MISSING_ADDRESS, "the email address is empty".into()));
    }
    let parsed = email_address::EmailAddress::from_str(raw).map_err(|e| {
        (
            codes::INVALID_EMAIL,
            format!("'{raw}' is not a usable email address: {e}"),
        )
    })?;
    if raw.contains('<') || !parsed.domain().contains('.') {
        return Err((
            codes::INVALID_EMAIL,
            format!("'{raw}' is not a usable email address: the domain has no dot"),
        ));
    }
    Ok(format!(
        "{}@{}",
        parsed.local_part(),
        parsed.domain().to_ascii_lowercase()
    ))
}

/// Loads the phone number metadata (every country's number patterns, about 0.1 s) now rather
/// than at a list's first phone number. The validate function calls it at init, once per
/// process.
pub fn warm_up() {
    let _ = check_phone("+4520000000", phonenumber::country::Id::DK);
}

/// A phone number in E.164, read with a default region for national numbers.
pub fn check_phone(
    raw: &str,
    region: phonenumber::country::Id,
) -> Result<String, (&'static str, String)> {
    if raw.is_empty() {
        return Err((codes::MISSING_ADDRESS, "the phone number is empty".into()));
    }
    let parsed = phonenumber::parse(Some(region), raw).map_err(|e| {
        (
            codes::INVALID_PHONE,
            format!("'{raw}' is not a phone number: {e}"),
        )
    })?;
    if !phonenumber::is_valid(&parsed) {
        return Err((
            codes::INVALID_PHONE,
            format!("'{raw}' is not a valid phone number for its country"),
        ));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
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
            email: Some(EmailSource {
                from: "a@example.org".into(),
                subject: "Hi {{ name }}".into(),
                text: "Dear {{ name }} in {{ town }}".into(),
                html: None,
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
}
