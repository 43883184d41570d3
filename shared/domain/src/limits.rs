//! Limits of the services that shape the domain's batches.

use crate::{Error, Result};

/// Items of one transaction: the service's limit.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Recipients of one claim or one result write (one item is the dispatch).
pub const MAX_RECIPIENTS_PER_WRITE: usize = MAX_TRANSACTION_ITEMS - 1;
/// SES v2's largest message, attachments and encoding included.
pub const MAX_EMAIL_BYTES: usize = 40_000_000;
/// The email attachment limit when none is configured: 5 MiB, about 7 MB encoded.
pub const DEFAULT_ATTACHMENT_BYTES: u64 = 5 * 1024 * 1024;
/// The largest email attachment limit that may be configured: 25 MiB, about 36 MB encoded,
/// which leaves room for the text, the HTML and a recipient's letter under
/// [`MAX_EMAIL_BYTES`].
pub const MAX_ATTACHMENT_BYTES: u64 = 25 * 1024 * 1024;

/// Refuses a claim or result write of more recipients than one transaction holds; `what`
/// names them ("recipients in one claim", "results in one write").
pub fn within_one_write(count: usize, what: &str) -> Result<()> {
    if count > MAX_RECIPIENTS_PER_WRITE {
        return Err(Error::Malformed(format!(
            "{count} {what}; at most {MAX_RECIPIENTS_PER_WRITE}"
        )));
    }
    Ok(())
}

/// Limits on what callers send, each enforced where it enters (the API, the manifest, the
/// list), so that nothing reaches a service past that service's own limits (DynamoDB's
/// 400 KB item and 1,024-byte sort key, SQS's 256 KB message) and no answer echoes more than
/// a bounded part of it back. The README's table of limits lists these.
pub mod input {
    /// A dispatch's title, in characters.
    pub const TITLE_CHARS: usize = 200;
    /// A recipient id named in a request (remove, resend), in bytes: well within DynamoDB's
    /// 1,024-byte sort key.
    pub const RECIPIENT_ID_BYTES: usize = 256;
    /// Recipient ids one request names.
    pub const CHOSEN_IDS: usize = 1000;
    /// States one request names (`state` in a query, `states` in a resend).
    pub const STATES: usize = 20;
    /// A search (`q`), a state list (`state`) or another query value, in characters.
    pub const QUERY_VALUE_CHARS: usize = 200;
    /// An opaque page cursor, in characters (a shard and a sort key, hex-encoded).
    pub const CURSOR_CHARS: usize = 2_100;
    /// A request body the API reads, in bytes.
    pub const BODY_BYTES: usize = 1024 * 1024;
    /// An approver named in a forward, in characters.
    pub const PERSON_CHARS: usize = 200;
    /// A problem's detail, in characters: no answer echoes more of what was sent.
    pub const DETAIL_CHARS: usize = 300;
    /// An audit entry's outcome, in characters.
    pub const AUDIT_OUTCOME_CHARS: usize = 1_000;

    /// A list cell the dispatch uses (id, address, channel, consent, status, merge field),
    /// in characters; a longer one makes its row invalid.
    pub const CELL_CHARS: usize = 10_000;
    /// The merge values one recipient's messages use, together, in bytes: the recipient's
    /// record stays far below DynamoDB's 400 KB item limit.
    pub const RECIPIENT_VALUES_BYTES: usize = 100_000;
    /// A column name in the list's header, in characters.
    pub const COLUMN_NAME_CHARS: usize = 200;
    /// Columns of a list's header.
    pub const COLUMNS: usize = 1_000;
    /// One problem's message in the validation report, in characters.
    pub const PROBLEM_CHARS: usize = 500;
    /// A recipient's recorded reason, in characters.
    pub const REASON_CHARS: usize = 2_000;

    /// `manifest.json`, in bytes.
    pub const MANIFEST_BYTES: usize = 64 * 1024;
    /// A file name in the manifest (list, templates), in bytes.
    pub const FILE_NAME_BYTES: usize = 255;
    /// A worksheet name, in characters (spreadsheet programs allow 31).
    pub const SHEET_CHARS: usize = 100;
    /// A text encoding's name, in characters.
    pub const ENCODING_CHARS: usize = 40;
    /// A column name the manifest gives (`columns`, exclusion columns), in characters.
    pub const MANIFEST_COLUMN_CHARS: usize = COLUMN_NAME_CHARS;
    /// The email sender (`email.from`), in characters.
    pub const FROM_CHARS: usize = 320;
    /// The email subject template, in characters.
    pub const SUBJECT_CHARS: usize = 1_000;
    /// An SMS sender id, in characters (the networks' limit for alphanumeric senders).
    pub const SENDER_ID_CHARS: usize = 11;
    /// Status codes an exclusion lists.
    pub const EXCLUDED_CODES: usize = 1_000;
    /// One excluded status code, in characters.
    pub const EXCLUDED_CODE_CHARS: usize = 100;
    /// Lines of a letter's letterhead, footer or signature, and address columns.
    pub const LETTER_LINES: usize = 10;
    /// One such line, the sender, the return address or the closing, in characters.
    pub const LETTER_LINE_CHARS: usize = 200;
    /// A letter's logo, in bytes (it is kept in the frozen package).
    pub const LOGO_BYTES: usize = 256 * 1024;
}

/// `text` cut to at most `max_chars` characters (on a character boundary), with `…` when
/// anything was cut.
pub fn truncated(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => {
            let cut = text[..at].char_indices().last().map_or(0, |(i, _)| i);
            std::borrow::Cow::Owned(format!("{}…", &text[..cut]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_cuts_long_text_on_a_character_boundary() {
        assert_eq!(truncated("abc", 3), "abc");
        assert_eq!(truncated("abcd", 3), "ab…");
        assert_eq!(truncated("æøåæøå", 4), "æøå…");
        assert_eq!(truncated("æøåæøå", 4).chars().count(), 4);
        assert_eq!(truncated("", 0), "");
    }
}
