//! The manifest's values against their limits (`limits::input`), each refused by name.

use super::{Manifest, ManifestError};
use crate::limits::input as limits;

impl Manifest {
    /// Every value within its limit, checked before any is looked at further, so that no
    /// message quotes an unbounded value.
    pub(super) fn check_lengths(&self) -> Result<(), ManifestError> {
        use limits::*;
        let mut values: Vec<(&str, Option<&str>, usize)> = vec![
            ("title", Some(self.title.as_str()), TITLE_CHARS),
            ("sheet", self.sheet.as_deref(), SHEET_CHARS),
            ("encoding", self.encoding.as_deref(), ENCODING_CHARS),
            ("phone_region", self.phone_region.as_deref(), ENCODING_CHARS),
            (
                "columns.id",
                Some(self.columns.id.as_str()),
                MANIFEST_COLUMN_CHARS,
            ),
            (
                "columns.email",
                Some(self.columns.email.as_str()),
                MANIFEST_COLUMN_CHARS,
            ),
            (
                "columns.phone",
                Some(self.columns.phone.as_str()),
                MANIFEST_COLUMN_CHARS,
            ),
            (
                "columns.channel",
                Some(self.columns.channel.as_str()),
                MANIFEST_COLUMN_CHARS,
            ),
            (
                "exclusions.status_column",
                self.exclusions.status_column.as_deref(),
                MANIFEST_COLUMN_CHARS,
            ),
            (
                "exclusions.consent_column",
                self.exclusions.consent_column.as_deref(),
                MANIFEST_COLUMN_CHARS,
            ),
        ];
        if let Some(e) = &self.email {
            values.push(("email.from", Some(&e.from), FROM_CHARS));
            values.push(("email.subject", Some(&e.subject), SUBJECT_CHARS));
        }
        if let Some(s) = &self.sms {
            values.push(("sms.sender_id", s.sender_id.as_deref(), SENDER_ID_CHARS));
        }
        for column in self.exclusions.channel_consent.values() {
            values.push((
                "exclusions.channel_consent",
                Some(column.as_str()),
                MANIFEST_COLUMN_CHARS,
            ));
        }
        for (field, value) in [
            ("columns.addressee", &self.columns.addressee),
            ("columns.postcode", &self.columns.postcode),
            ("columns.city", &self.columns.city),
            ("columns.country", &self.columns.country),
        ] {
            values.push((field, Some(value.as_str()), MANIFEST_COLUMN_CHARS));
        }
        let mut lists: Vec<(&str, &[String], usize)> = vec![(
            "columns.address_lines",
            &self.columns.address_lines,
            MANIFEST_COLUMN_CHARS,
        )];
        if let Some(l) = &self.letter {
            values.push(("letter.subject", Some(&l.subject), SUBJECT_CHARS));
            values.push(("letter.sender", Some(&l.sender), LETTER_LINE_CHARS));
            values.push(("letter.lang", l.lang.as_deref(), ENCODING_CHARS));
            values.push((
                "letter.return_address",
                l.return_address.as_deref(),
                LETTER_LINE_CHARS,
            ));
            values.push(("letter.closing", l.closing.as_deref(), LETTER_LINE_CHARS));
            values.push((
                "letter.home_country",
                l.home_country.as_deref(),
                ENCODING_CHARS,
            ));
            lists.push(("letter.letterhead", &l.letterhead, LETTER_LINE_CHARS));
            lists.push(("letter.footer", &l.footer, LETTER_LINE_CHARS));
            lists.push(("letter.signature", &l.signature, LETTER_LINE_CHARS));
            lists.push(("letter.sort_by", &l.sort_by, MANIFEST_COLUMN_CHARS));
        }
        if let Some(e) = &self.email {
            lists.push(("email.bcc", &e.bcc, FROM_CHARS));
            lists.push(("email.reply_to", &e.reply_to, FROM_CHARS));
        }
        for (field, lines, max) in lists {
            if lines.len() > LETTER_LINES {
                return Err(ManifestError::Invalid(format!(
                    "{field} has {} lines; at most {LETTER_LINES} are accepted",
                    lines.len()
                )));
            }
            if let Some(long) = lines.iter().find(|l| l.chars().count() > max) {
                return Err(ManifestError::Invalid(format!(
                    "{field} holds a line of {} characters; at most {max} are accepted",
                    long.chars().count()
                )));
            }
        }
        for (field, value, max) in values {
            if let Some(v) = value {
                let chars = v.chars().count();
                if chars > max {
                    return Err(ManifestError::Invalid(format!(
                        "{field} is {chars} characters long; at most {max} are accepted"
                    )));
                }
            }
        }
        let mut names = vec![("list", Some(self.list.as_str()))];
        if let Some(e) = &self.email {
            names.push(("email.text", Some(&e.text)));
            names.push(("email.html", e.html.as_deref()));
            names.push(("email.attachment", e.attachment.as_deref()));
        }
        if let Some(s) = &self.sms {
            names.push(("sms.text", Some(&s.text)));
        }
        if let Some(l) = &self.letter {
            names.push(("letter.text", Some(&l.text)));
            names.push(("letter.logo", l.logo.as_deref()));
        }
        for (field, name) in names {
            if let Some(n) = name.filter(|n| n.len() > FILE_NAME_BYTES) {
                return Err(ManifestError::Invalid(format!(
                    "{field} is a file name of {} bytes; at most {FILE_NAME_BYTES} are accepted",
                    n.len()
                )));
            }
        }
        let codes = &self.exclusions.excluded_codes;
        if codes.len() > EXCLUDED_CODES {
            return Err(ManifestError::Invalid(format!(
                "exclusions.excluded_codes lists {} codes; at most {EXCLUDED_CODES} are accepted",
                codes.len()
            )));
        }
        if let Some(long) = codes
            .iter()
            .find(|c| c.chars().count() > EXCLUDED_CODE_CHARS)
        {
            return Err(ManifestError::Invalid(format!(
                "exclusions.excluded_codes holds a code of {} characters; at most {EXCLUDED_CODE_CHARS} are accepted",
                long.chars().count()
            )));
        }
        Ok(())
    }
}
