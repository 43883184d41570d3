//! A recipient: its states and how they may change, its record, and the receipts a
//! provider reports for it.

use super::*;

/// State of one recipient. Every row of the list ends in exactly one of these, with a reason
/// where it was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// The row failed validation and will never be sent to.
    Invalid,
    /// Valid and waiting to be sent.
    Pending,
    /// Claimed by a sender; the provider call is in progress.
    Sending,
    /// The provider accepted the message.
    Sent,
    /// The letter was produced: typeset and filed as a document of the dispatch (a letter's
    /// word for sent).
    Created,
    /// The provider refused the message permanently.
    Failed,
    /// The provider call ended without an answer (timeout after the request left): the
    /// message may or may not have been accepted. Never re-sent automatically; an operator
    /// decides.
    Unknown,
    /// The dispatch was rejected before this recipient was sent to.
    Rejected,
    /// The row is valid but the dispatch's exclusions leave it out (e.g. the address is on
    /// the suppression list after a hard bounce or a complaint).
    Excluded,
}

impl RecipientState {
    pub const ALL: [RecipientState; 9] = [
        RecipientState::Invalid,
        RecipientState::Pending,
        RecipientState::Sending,
        RecipientState::Sent,
        RecipientState::Created,
        RecipientState::Failed,
        RecipientState::Unknown,
        RecipientState::Rejected,
        RecipientState::Excluded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Invalid => "invalid",
            RecipientState::Pending => "pending",
            RecipientState::Sending => "sending",
            RecipientState::Sent => "sent",
            RecipientState::Created => "created",
            RecipientState::Failed => "failed",
            RecipientState::Unknown => "unknown",
            RecipientState::Rejected => "rejected",
            RecipientState::Excluded => "excluded",
        }
    }

    /// The legal transitions of a recipient. `Sending -> Pending` is the release of a claim
    /// after a throttle or a transient fault, when the provider did not take the message.
    /// `Failed`/`Unknown -> Pending` is an operator's resend, and `Sent -> Pending` the
    /// follow-up of a failed delivery on the next channel: the ways out of a final state;
    /// `Pending -> Excluded` an operator's removal before approval.
    pub fn can_become(self, next: RecipientState) -> bool {
        use RecipientState::*;
        matches!(
            (self, next),
            (Pending, Sending)
                | (Pending, Rejected)
                | (Pending, Excluded)
                | (Sending, Sent)
                | (Sending, Created)
                | (Sending, Failed)
                | (Sending, Unknown)
                | (Sending, Pending)
                | (Failed, Pending)
                | (Unknown, Pending)
                | (Sent, Pending)
        )
    }

    /// Whether an operator may send to the recipient again: the provider refused the
    /// message, or never said whether it took it.
    pub fn may_be_resent(self) -> bool {
        matches!(self, RecipientState::Failed | RecipientState::Unknown)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RecipientState::Invalid
                | RecipientState::Sent
                | RecipientState::Created
                | RecipientState::Failed
                | RecipientState::Unknown
                | RecipientState::Rejected
                | RecipientState::Excluded
        )
    }
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecipientState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecipientState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown recipient state '{s}'"))
    }
}

/// One row of the list as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub dispatch_id: String,
    /// The id from the list's id column; empty when the row had none.
    pub recipient_id: String,
    /// Line in the source file (header is line 1) or row number in the sheet.
    pub line: u64,
    pub channel: Option<Channel>,
    /// Normalised address: the email address, or the phone number in E.164.
    pub address: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub state: RecipientState,
    /// Why the recipient was not sent to (invalid, failed, rejected).
    pub reason: Option<String>,
    pub message_id: Option<String>,
    pub sent_at: Option<String>,
    /// When a sender claimed the recipient (while `sending`).
    pub claimed_at: Option<String>,
    pub updated_at: String,
    /// What the provider reported after accepting the message (see [`Receipt`]).
    #[serde(default)]
    pub receipt: Option<Receipt>,
    /// When the provider's event happened.
    #[serde(default)]
    pub receipt_at: Option<String>,
    /// The provider's words: bounce type and diagnostic, complaint type, carrier status.
    #[serde(default)]
    pub receipt_detail: Option<String>,
    /// The dispatch's send attempt this recipient was last handed out in: 1, or the attempt
    /// of the resend that gave it back to the senders.
    #[serde(default = "first_attempt")]
    pub send_attempt: u32,
    /// Why the attempt before the last one did not reach the recipient (after a resend).
    #[serde(default)]
    pub previous_reason: Option<String>,
    /// A letter's values of the columns its print files are sorted by, in order.
    #[serde(default)]
    pub print_sort: Vec<String>,
    /// The postal address as a letter prints it (a line each), kept for an email that
    /// carries the recipient's own letter.
    #[serde(default)]
    pub postal: Option<String>,
    /// The later channels of the dispatch's fallback order that can reach the recipient, in
    /// order: a hard bounce or an undeliverable message is followed up on the first.
    #[serde(default)]
    pub fallbacks: Vec<Reach>,
    /// When a failed delivery was followed up on the next channel (once per recipient).
    #[serde(default)]
    pub followed_up_at: Option<String>,
}

/// A channel that can reach a recipient, and the address there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub channel: Channel,
    pub address: String,
}

/// Receipts that say a message did not reach its recipient for good: a hard bounce, a
/// rejection, an undeliverable SMS. A complaint is never one (the recipient got it).
pub fn calls_for_follow_up(receipt: Receipt, detail: Option<&str>) -> bool {
    match receipt {
        Receipt::Bounced => detail.is_some_and(|d| d.starts_with("Permanent")),
        Receipt::Rejected | Receipt::Undelivered => true,
        _ => false,
    }
}

/// The channel a failed delivery is followed up on, if the recipient may have one: it was
/// sent (not removed, not failed before sending), had not been delivered, has a later
/// channel, and was not followed up before; the failure came within `within_secs` of the
/// send.
pub fn follow_up_of<'a>(r: &'a Recipient, failed_at: &str, within_secs: i64) -> Option<&'a Reach> {
    if r.state != RecipientState::Sent
        || r.followed_up_at.is_some()
        || r.receipt == Some(Receipt::Delivered)
    {
        return None;
    }
    let sent = r.sent_at.as_deref()?;
    let (sent, failed) = (parse_rfc3339(sent)?, parse_rfc3339(failed_at)?);
    if (failed - sent).whole_seconds() > within_secs {
        return None;
    }
    r.fallbacks.first()
}

fn parse_rfc3339(t: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

impl Recipient {
    /// A pending recipient of a row, with no channel, address or fields yet.
    pub fn pending(dispatch_id: &str, recipient_id: &str, line: u64) -> Recipient {
        Recipient {
            dispatch_id: dispatch_id.to_string(),
            recipient_id: recipient_id.to_string(),
            line,
            channel: None,
            address: None,
            fields: BTreeMap::new(),
            state: RecipientState::Pending,
            reason: None,
            message_id: None,
            sent_at: None,
            claimed_at: None,
            updated_at: now_rfc3339(),
            receipt: None,
            receipt_at: None,
            receipt_detail: None,
            send_attempt: 1,
            previous_reason: None,
            print_sort: Vec::new(),
            postal: None,
            fallbacks: Vec::new(),
            followed_up_at: None,
        }
    }
}

/// A delivery event from the provider, recorded on a recipient that was sent to. A later
/// event replaces an earlier one only when it says more: delayed < delivered < the
/// failures < complained; repeats and late arrivals of a weaker event change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receipt {
    /// Delivery is delayed; the provider keeps trying.
    Delayed,
    /// The recipient's server or the carrier accepted the message.
    Delivered,
    /// The provider refused the message after accepting the request (virus, policy).
    Rejected,
    /// The message could not be rendered by the provider.
    RenderingFailed,
    /// The recipient's server refused the message.
    Bounced,
    /// The carrier could not deliver the SMS (unreachable, blocked, expired, opted out).
    Undelivered,
    /// The recipient marked the message as spam.
    Complained,
}

impl Receipt {
    pub const ALL: [Receipt; 7] = [
        Receipt::Delayed,
        Receipt::Delivered,
        Receipt::Rejected,
        Receipt::RenderingFailed,
        Receipt::Bounced,
        Receipt::Undelivered,
        Receipt::Complained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Receipt::Delayed => "delayed",
            Receipt::Delivered => "delivered",
            Receipt::Rejected => "rejected",
            Receipt::RenderingFailed => "rendering_failed",
            Receipt::Bounced => "bounced",
            Receipt::Undelivered => "undelivered",
            Receipt::Complained => "complained",
        }
    }

    /// Strength of the event: a stored receipt is replaced only by a stronger one.
    pub fn rank(self) -> u64 {
        match self {
            Receipt::Delayed => 1,
            Receipt::Delivered => 2,
            Receipt::Rejected
            | Receipt::RenderingFailed
            | Receipt::Bounced
            | Receipt::Undelivered => 3,
            Receipt::Complained => 4,
        }
    }

    /// Whether the message reached the recipient.
    pub fn reached(self) -> bool {
        matches!(self, Receipt::Delivered | Receipt::Complained)
    }
}

impl FromStr for Receipt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Receipt::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown receipt '{s}'"))
    }
}
