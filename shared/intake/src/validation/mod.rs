//! Row and header checks. Every row becomes a [`Recipient`]: pending when it can be sent,
//! invalid with its problems otherwise. Nothing is dropped.

use crate::list::{normalise_header, ListReader, RawRow};
use crate::template::MessageTemplate;
use domain::manifest::{ChannelMode, Manifest};
use domain::model::{Channel, Recipient, RecipientState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

mod row;
mod rules;

use rules::*;
pub use rules::{
    check_email, check_phone, consent, country, postal_address, warm_up, PostalCells,
    ADDRESS_LINES, ADDRESS_LINE_CHARS,
};

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

/// The fewest bytes a recipient's row takes in a compressed sheet (an id and an address
/// compress to no fewer): a declared row count past a file's size over this is not believed.
pub const MIN_SHEET_ROW_BYTES: u64 = 8;

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
    /// A cell the dispatch uses holds a formula whose result the file does not have.
    pub const FORMULA_WITHOUT_RESULT: &str = "formula_without_result";
    /// A cell the dispatch uses is longer than the limit (the id longer than its own).
    pub const VALUE_TOO_LONG: &str = "value_too_long";
    /// The merge values of one recipient are larger together than the limit.
    pub const VALUES_TOO_LARGE: &str = "values_too_large";
    /// A letter's addressee, street address or city is empty.
    pub const MISSING_POSTAL_ADDRESS: &str = "missing_postal_address";
    /// A letter's address takes more lines than the envelope window holds.
    pub const ADDRESS_TOO_MANY_LINES: &str = "address_too_many_lines";
    /// A line of a letter's address is wider than the envelope window.
    pub const ADDRESS_LINE_TOO_LONG: &str = "address_line_too_long";
    pub const UNKNOWN_COUNTRY: &str = "unknown_country";
    /// Not a problem: the row goes by a later channel of the fallback order.
    pub const FALLBACK: &str = "fallback";
    /// No channel of the fallback order can reach the row.
    pub const NO_CHANNEL: &str = "no_channel";
}

/// Leaves a valid row out because its address is on the suppression list: the row becomes
/// `excluded` with the reason, and one report line says why.
/// A valid row whose address is on the suppression list goes by the `i`-th of its later
/// channels instead, and the report says so.
pub fn fall_back_from_suppressed(
    checked: &mut Checked,
    i: usize,
    entry: &domain::suppression::Suppression,
    columns: &domain::manifest::Columns,
) {
    let r = &mut checked.recipient;
    let from = r.channel;
    let column = match from {
        Some(Channel::Sms) => &columns.phone,
        Some(Channel::Letter) => &columns.addressee,
        _ => &columns.email,
    };
    let mut later = std::mem::take(&mut r.fallbacks);
    let to = later.remove(i);
    r.fallbacks = later.split_off(i);
    checked.notices.push(Problem {
        line: r.line,
        recipient_id: r.recipient_id.clone(),
        column: column.clone(),
        code: codes::FALLBACK,
        message: format!(
            "from {} to {}: {}: the address is on the suppression list ({} on {})",
            from.map(|c| c.as_str()).unwrap_or("?"),
            to.channel,
            codes::SUPPRESSED,
            entry.reason,
            entry.at
        ),
    });
    r.channel = Some(to.channel);
    r.address = Some(to.address);
}

pub fn exclude_suppressed(
    checked: &mut Checked,
    entry: &domain::suppression::Suppression,
    columns: &domain::manifest::Columns,
) {
    let r = &mut checked.recipient;
    let column = match r.channel {
        Some(Channel::Sms) => &columns.phone,
        Some(Channel::Letter) => &columns.addressee,
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
    /// A letter's address: addressee, address lines, postcode, city, country.
    postal: PostalColumns,
    home_country: isocountry::CountryCode,
    /// The columns a letter's print files are sorted by.
    print_sort: Vec<Option<usize>>,
    status_col: Option<usize>,
    consent_col: Option<usize>,
    /// Per channel, the consent column's name and place.
    channel_consent: BTreeMap<Channel, (String, usize)>,
    region: phonenumber::country::Id,
    /// Merge fields each channel's template uses, with their columns (worked out once).
    email_fields: Vec<(String, Option<usize>)>,
    sms_fields: Vec<(String, Option<usize>)>,
    letter_fields: Vec<(String, Option<usize>)>,
    /// Every column the checks or the messages read, once each, in order.
    used: Vec<usize>,
    /// Fingerprints (128-bit hashes) of the ids and addresses seen: 16 bytes a row rather
    /// than the strings, so a million-row list stays small.
    seen_ids: Fingerprints,
    seen_addresses: Fingerprints,
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
    /// What the report says of a valid row that is no problem (the channel it fell back to).
    pub notices: Vec<Problem>,
}

#[derive(Debug, Clone, Default)]
struct PostalColumns {
    addressee: Option<usize>,
    lines: Vec<Option<usize>>,
    postcode: Option<usize>,
    city: Option<usize>,
    country: Option<usize>,
}

impl PostalColumns {
    fn all(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        [self.addressee, self.postcode, self.city, self.country]
            .into_iter()
            .chain(self.lines.iter().copied())
    }
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
        // With a fallback order, a list without a channel column goes by the order.
        if manifest.channel == ChannelMode::Column
            && channel_col.is_none()
            && manifest.fallback.is_empty()
        {
            problems.push(format!(
                "channel is chosen per row but the list has no '{}' column",
                cols.channel
            ));
        }
        let postal = PostalColumns {
            addressee: find(&names, &cols.addressee),
            lines: cols.address_lines.iter().map(|c| find(&names, c)).collect(),
            postcode: find(&names, &cols.postcode),
            city: find(&names, &cols.city),
            country: find(&names, &cols.country),
        };
        if channels.contains(&Channel::Letter) && manifest.channel == ChannelMode::Letter {
            let mut lacking: Vec<&str> = Vec::new();
            if postal.addressee.is_none() {
                lacking.push(&cols.addressee);
            }
            if postal.lines.iter().all(Option::is_none) {
                lacking.push(cols.address_lines.first().map_or("address", String::as_str));
            }
            if postal.city.is_none() {
                lacking.push(&cols.city);
            }
            if !lacking.is_empty() {
                problems.push(format!(
                    "the list has no '{}' column (the letters' postal address)",
                    lacking.join("', '")
                ));
            }
        }
        if manifest.channel == ChannelMode::Column
            && email_col.is_none()
            && phone_col.is_none()
            && postal.city.is_none()
        {
            problems.push(format!(
                "the list has no '{}', '{}' or '{}' column: no recipient can be reached",
                cols.email, cols.phone, cols.city
            ));
        }
        let mut print_sort = Vec::new();
        if let Some(l) = manifest
            .letter
            .as_ref()
            .filter(|_| channels.contains(&Channel::Letter))
        {
            for c in l.sort_columns(cols) {
                let at = find(&names, &c);
                if at.is_none() && !l.sort_by.is_empty() {
                    problems.push(format!(
                        "letter.sort_by names the column '{c}' but the list has no such column"
                    ));
                }
                print_sort.push(at);
            }
        }
        let home_code = manifest
            .letter
            .as_ref()
            .and_then(|l| l.home_country.as_deref())
            .or(manifest.phone_region.as_deref())
            .unwrap_or(default_region);
        let home_country = isocountry::CountryCode::for_alpha2_caseless(home_code)
            .map_err(|_| vec![format!("'{home_code}' is not a known country code")])?;
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
        let mut channel_consent = BTreeMap::new();
        for (ch, c) in &x.channel_consent {
            match find(&names, c) {
                Some(i) => {
                    channel_consent.insert(*ch, (c.clone(), i));
                }
                None => problems.push(format!(
                    "exclusions name the {ch} consent column '{c}' but the list has no such column"
                )),
            }
        }
        let mut missing: Vec<String> = Vec::new();
        // An email that carries the recipient's letter needs the letter's fields as well.
        let mut merged = channels.clone();
        if manifest.email.as_ref().is_some_and(|e| e.attach_letter)
            && !merged.contains(&Channel::Letter)
        {
            merged.push(Channel::Letter);
        }
        for ch in &merged {
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
        let email_fields = columns_of(template, Channel::Email, &names);
        let sms_fields = columns_of(template, Channel::Sms, &names);
        let letter_fields = columns_of(template, Channel::Letter, &names);
        let mut used: Vec<usize> = [
            id_col,
            email_col,
            phone_col,
            channel_col,
            status_col,
            consent_col,
        ]
        .into_iter()
        .chain(email_fields.iter().map(|(_, c)| *c))
        .chain(sms_fields.iter().map(|(_, c)| *c))
        .chain(letter_fields.iter().map(|(_, c)| *c))
        .chain(postal.all())
        .chain(print_sort.iter().copied())
        .flatten()
        .collect();
        used.sort_unstable();
        used.dedup();
        match (problems.is_empty(), id_col) {
            (true, Some(id_col)) => Ok(Validator {
                manifest,
                template,
                dispatch_id: dispatch_id.to_string(),
                id_col,
                email_col,
                phone_col,
                channel_col,
                postal,
                home_country,
                print_sort,
                status_col,
                consent_col,
                channel_consent,
                region,
                email_fields,
                sms_fields,
                letter_fields,
                used,
                names,
                seen_ids: Fingerprints::default(),
                seen_addresses: Fingerprints::default(),
            }),
            _ => Err(problems),
        }
    }

    /// Makes room for the whole list's ids and addresses at once, so the sets do not grow by
    /// doubling with both copies in memory: before the first row from the rows a sheet
    /// declares (no more than its file's size could hold: a declared size is only a hint),
    /// after `ESTIMATE_AFTER` rows of a CSV list from its size (`file_size`) and how far
    /// those rows reached. Call it before checking row number `rows_read + 1`.
    pub fn presize(&mut self, reader: &ListReader, file_size: u64, rows_read: u64, max_rows: u64) {
        let rest = match (rows_read, reader.declared_rows(), reader.progress()) {
            (0, Some(declared), _) => declared.min(file_size / MIN_SHEET_ROW_BYTES),
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

    /// A row whose used cells cannot be judged: a formula with no saved result, or a value
    /// past its limit. It is invalid with those problems alone; its id is kept only when
    /// within its limit.
    fn unjudgeable(&self, row: &RawRow) -> Option<Checked> {
        use domain::limits::input;
        let mut problems = Vec::new();
        let raw_id = row.cell(self.id_col).unwrap_or("");
        let id = if raw_id.len() <= input::RECIPIENT_ID_BYTES {
            raw_id
        } else {
            ""
        };
        for &i in &self.used {
            let column = &self.names[i];
            let value = row.cell(i).unwrap_or("");
            let problem = |code, message| Problem {
                line: row.line,
                recipient_id: id.to_string(),
                column: column.clone(),
                code,
                message,
            };
            if row.no_result().contains(&i) {
                problems.push(problem(
                    codes::FORMULA_WITHOUT_RESULT,
                    format!("'{column}' holds a formula whose result is not saved in the file (a program that does not calculate formulas wrote it); open the file in the spreadsheet program, save it and upload it again"),
                ));
            } else if i == self.id_col && value.len() > input::RECIPIENT_ID_BYTES {
                problems.push(problem(
                    codes::VALUE_TOO_LONG,
                    format!(
                        "the recipient id is {} bytes long; at most {} are accepted",
                        value.len(),
                        input::RECIPIENT_ID_BYTES
                    ),
                ));
            } else if value.len() > input::CELL_CHARS && value.chars().count() > input::CELL_CHARS {
                problems.push(problem(
                    codes::VALUE_TOO_LONG,
                    format!(
                        "'{column}' is {} characters long; at most {} are accepted",
                        value.chars().count(),
                        input::CELL_CHARS
                    ),
                ));
            }
        }
        if problems.is_empty() {
            return None;
        }
        let recipient = self.recipient(row.line, id.to_string(), None, None, BTreeMap::new());
        Some(self.finish(recipient, problems, false))
    }

    fn finish(
        &self,
        mut recipient: Recipient,
        problems: Vec<Problem>,
        keyed_by_id: bool,
    ) -> Checked {
        use domain::limits::{input, truncated};
        let mut problems = problems;
        for p in &mut problems {
            if p.message.len() > input::PROBLEM_CHARS {
                p.message = truncated(&p.message, input::PROBLEM_CHARS).into_owned();
            }
        }
        if !problems.is_empty() {
            recipient.state = RecipientState::Invalid;
            let reason = problems
                .iter()
                .map(|p| format!("{}: {}", p.code, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            recipient.reason = Some(truncated(&reason, input::REASON_CHARS).into_owned());
        }
        Checked {
            recipient,
            problems,
            keyed_by_id,
            segments: None,
            notices: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
