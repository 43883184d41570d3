//! Receipts: what the providers report after they accepted a message, and what follows from
//! it.
//!
//! - SES publishes email sending events of the dispatch's configuration set to an SNS topic,
//!   and AWS End User Messaging SMS publishes SMS events of its configuration set to the same
//!   topic; the topic feeds the receipts queue. [`parse`] reads one queue message body, with
//!   or without SNS's envelope, into an [`Event`].
//! - The event is matched to its recipient by the provider's message id through the table's
//!   `by-message` index (a query, never a scan) and recorded on the recipient
//!   ([`Store::record_receipt`]).
//! - Hard bounces, complaints and SMS opt-outs put the address on the suppression list
//!   ([`Store::suppress`]); validation leaves suppressed addresses out of later dispatches.
//! - A receipt for a dispatch that has already finished marks its history as stale; the
//!   scheduled function writes it again ([`Store::stale_histories`]).
//!
//! | item             | pk                     | sk                |
//! |------------------|------------------------|-------------------|
//! | suppressed entry | `SUPPRESSED#<address>` | `SUPPRESSED`      |
//! | stale history    | `HISTORY#STALE`        | `<dispatch id>`   |

use crate::error::{Error, Result};
use crate::model::{rfc3339, Receipt};
use crate::store::{get_s, n, s, Item, RecipientKey, Store};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// The sparse index of recipients by the provider's message id.
pub const INDEX_BY_MESSAGE: &str = "by-message";
const SUPPRESSED_SK: &str = "SUPPRESSED";
const STALE_PK: &str = "HISTORY#STALE";

/// One provider event about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The id the provider returned when it accepted the message.
    pub message_id: String,
    pub receipt: Receipt,
    /// When the event happened (RFC 3339).
    pub at: String,
    /// When the provider accepted the message, if the event says (RFC 3339).
    pub sent_at: Option<String>,
    /// The provider's words about it.
    pub detail: Option<String>,
    /// Addresses that must not be sent to again, with the reason.
    pub suppress: Vec<Suppression>,
}

/// An address on the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// Email address (lower case) or phone number (E.164).
    pub address: String,
    /// "bounced", "complained" or "opted_out".
    pub reason: String,
    pub detail: Option<String>,
    pub at: String,
    pub message_id: String,
}

/// The form in which an address is kept on the suppression list and looked up.
pub fn suppression_key(address: &str) -> String {
    address.trim().to_lowercase()
}

/// What one queue message body holds.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Event(Event),
    /// A valid notification that records nothing (sends, opens, queued SMS, subscription
    /// confirmations); the reason is logged.
    Ignored(String),
}

/// Reads a receipts-queue message: an SNS notification envelope whose `Message` is the
/// provider's event, or the event itself (raw message delivery).
pub fn parse(body: &str) -> std::result::Result<Parsed, String> {
    let outer: Value =
        serde_json::from_str(body).map_err(|e| format!("the message is not JSON: {e}"))?;
    let event = match outer.get("Type").and_then(Value::as_str) {
        Some("Notification") => {
            let inner = outer
                .get("Message")
                .and_then(Value::as_str)
                .ok_or("the SNS notification has no Message")?;
            serde_json::from_str::<Value>(inner)
                .map_err(|e| format!("the SNS notification's Message is not JSON: {e}"))?
        }
        Some(other) => return Ok(Parsed::Ignored(format!("SNS message of type {other}"))),
        None => outer,
    };
    if let Some(kind) = event
        .get("eventType")
        .or_else(|| event.get("notificationType"))
        .and_then(Value::as_str)
    {
        if event.get("mail").is_some() {
            return ses_event(kind, &event);
        }
        if kind.starts_with("TEXT_") {
            return sms_event(kind, &event);
        }
        return Ok(Parsed::Ignored(format!("event type {kind}")));
    }
    Err("the message is neither an SES nor an SMS event".into())
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Joins the parts that are present: "Permanent/General: smtp; 550 5.1.1 user unknown".
fn join(parts: &[Option<String>]) -> Option<String> {
    let present: Vec<&str> = parts
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    (!present.is_empty()).then(|| present.join(": "))
}

fn ses_event(kind: &str, e: &Value) -> std::result::Result<Parsed, String> {
    let message_id =
        text(e, &["mail", "messageId"]).ok_or("the SES event has no mail.messageId")?;
    let sent_at = text(e, &["mail", "timestamp"]);
    let recipients_of = |obj: &str, list: &str| -> Vec<String> {
        e.get(obj)
            .and_then(|o| o.get(list))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("emailAddress").and_then(Value::as_str))
                    .map(suppression_key)
                    .collect()
            })
            .unwrap_or_default()
    };
    let stamp = |obj: &str| text(e, &[obj, "timestamp"]).or_else(|| sent_at.clone());
    let (receipt, at, detail, suppress_as) = match kind {
        "Delivery" => (
            Receipt::Delivered,
            stamp("delivery"),
            text(e, &["delivery", "smtpResponse"]),
            None,
        ),
        "Bounce" => {
            let kind = text(e, &["bounce", "bounceType"]);
            let sub = text(e, &["bounce", "bounceSubType"]);
            let diagnostic = e
                .get("bounce")
                .and_then(|b| b.get("bouncedRecipients"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|r| r.get("diagnosticCode").and_then(Value::as_str))
                .map(str::to_string);
            let permanent = kind.as_deref() == Some("Permanent");
            let what = join(&[kind.clone(), sub]).map(|k| k.replace(": ", "/"));
            (
                Receipt::Bounced,
                stamp("bounce"),
                join(&[what, diagnostic]),
                permanent.then_some(("bounced", recipients_of("bounce", "bouncedRecipients"))),
            )
        }
        "Complaint" => (
            Receipt::Complained,
            stamp("complaint"),
            join(&[
                text(e, &["complaint", "complaintFeedbackType"]),
                text(e, &["complaint", "complaintSubType"]),
            ]),
            Some((
                "complained",
                recipients_of("complaint", "complainedRecipients"),
            )),
        ),
        "Reject" => (
            Receipt::Rejected,
            sent_at.clone(),
            text(e, &["reject", "reason"]),
            None,
        ),
        "Rendering Failure" => (
            Receipt::RenderingFailed,
            sent_at.clone(),
            text(e, &["failure", "errorMessage"]),
            None,
        ),
        "DeliveryDelay" => (
            Receipt::Delayed,
            stamp("deliveryDelay"),
            text(e, &["deliveryDelay", "delayType"]),
            None,
        ),
        other => return Ok(Parsed::Ignored(format!("SES event {other}"))),
    };
    let at = at.ok_or_else(|| format!("the SES {kind} event has no time"))?;
    let suppress = match suppress_as {
        Some((reason, addresses)) => addresses
            .into_iter()
            .map(|address| Suppression {
                address,
                reason: reason.to_string(),
                detail: detail.clone(),
                at: at.clone(),
                message_id: message_id.clone(),
            })
            .collect(),
        None => vec![],
    };
    Ok(Parsed::Event(Event {
        message_id,
        receipt,
        at,
        sent_at,
        detail,
        suppress,
    }))
}

/// Milliseconds since the epoch, as SMS events give times, in RFC 3339.
fn from_millis(ms: &Value) -> Option<String> {
    let ms = ms.as_i64()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .map(rfc3339)
}

fn sms_event(kind: &str, e: &Value) -> std::result::Result<Parsed, String> {
    let message_id = text(e, &["messageId"]).ok_or("the SMS event has no messageId")?;
    let status = text(e, &["messageStatus"]);
    let receipt = match kind {
        "TEXT_DELIVERED" | "TEXT_SUCCESSFUL" => Receipt::Delivered,
        "TEXT_QUEUED" | "TEXT_PENDING" => {
            return Ok(Parsed::Ignored(format!("SMS event {kind} (not final)")))
        }
        _ => Receipt::Undelivered,
    };
    let at = e
        .get("eventTimestamp")
        .and_then(from_millis)
        .ok_or("the SMS event has no eventTimestamp")?;
    let detail = join(&[status.clone(), text(e, &["messageStatusDescription"])]);
    let opted_out = status.as_deref() == Some("OPTED_OUT") || kind == "TEXT_OPTED_OUT";
    let suppress = match (opted_out, text(e, &["destinationPhoneNumber"])) {
        (true, Some(number)) => vec![Suppression {
            address: suppression_key(&number),
            reason: "opted_out".into(),
            detail: detail.clone(),
            at: at.clone(),
            message_id: message_id.clone(),
        }],
        _ => vec![],
    };
    Ok(Parsed::Event(Event {
        message_id,
        receipt,
        at,
        sent_at: e.get("messageRequestTimestamp").and_then(from_millis),
        detail,
        suppress,
    }))
}

/// A recipient found by its message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dispatch_id: String,
    pub key: RecipientKey,
}

fn suppression_pk(address: &str) -> String {
    format!("SUPPRESSED#{}", suppression_key(address))
}

impl Store {
    /// The recipient a provider message id belongs to, through the `by-message` index.
    pub async fn recipient_by_message(&self, message_id: &str) -> Result<Option<Located>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_BY_MESSAGE)
            .key_condition_expression("message_id = :m")
            .expression_attribute_values(":m", s(message_id))
            .limit(2)
            .send()
            .await
            .map_err(Error::aws("Query by-message"))?;
        let Some(item) = out.items().first() else {
            return Ok(None);
        };
        let pk = get_s(item, "pk").unwrap_or_default();
        let sk = get_s(item, "sk").unwrap_or_default();
        let parsed = pk
            .strip_prefix("D#")
            .and_then(|rest| rest.rsplit_once("#S#"))
            .and_then(|(id, shard)| shard.parse::<u32>().ok().map(|sh| (id.to_string(), sh)));
        match parsed {
            Some((dispatch_id, shard)) => Ok(Some(Located {
                dispatch_id,
                key: RecipientKey { shard, sk },
            })),
            None => Err(Error::Malformed(format!(
                "message {message_id} is indexed on '{pk}', which is not a recipient"
            ))),
        }
    }

    /// Records a receipt on a recipient unless it already holds one as strong. Returns
    /// whether the record changed.
    pub async fn record_receipt(&self, at: &Located, event: &Event) -> Result<bool> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(crate::store::shard_pk(&at.dispatch_id, at.key.shard)))
            .key("sk", s(at.key.sk.clone()))
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(receipt_rank) OR receipt_rank < :rank)",
            )
            .expression_attribute_values(":r", s(event.receipt.as_str()))
            .expression_attribute_values(":rank", n(event.receipt.rank()))
            .expression_attribute_values(":at", s(event.at.clone()));
        let mut set = String::from("SET receipt = :r, receipt_rank = :rank, receipt_at = :at");
        match &event.detail {
            Some(d) => {
                set.push_str(", receipt_detail = :d");
                req = req.expression_attribute_values(":d", s(d.clone()));
            }
            None => set.push_str(" REMOVE receipt_detail"),
        }
        match req.update_expression(set).send().await {
            Ok(_) => Ok(true),
            Err(e) if crate::store::is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("UpdateItem receipt")(e)),
        }
    }

    /// Puts addresses on the suppression list (a later entry replaces an earlier one).
    pub async fn suppress(&self, entries: &[Suppression]) -> Result<()> {
        for e in entries {
            let mut item: Item = HashMap::from([
                ("pk".to_string(), s(suppression_pk(&e.address))),
                ("sk".to_string(), s(SUPPRESSED_SK)),
                ("address".to_string(), s(suppression_key(&e.address))),
                ("reason".to_string(), s(e.reason.clone())),
                ("at".to_string(), s(e.at.clone())),
                // Not `message_id`: the entry must not be found as a recipient by it.
                ("source_message_id".to_string(), s(e.message_id.clone())),
            ]);
            if let Some(d) = &e.detail {
                item.insert("detail".into(), s(d.clone()));
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(Error::aws("PutItem suppression"))?;
        }
        Ok(())
    }

    /// The suppression entries of the given addresses, by suppression key.
    pub async fn suppressed(&self, addresses: &[String]) -> Result<HashMap<String, Suppression>> {
        let mut keys: Vec<String> = addresses.iter().map(|a| suppression_key(a)).collect();
        keys.sort();
        keys.dedup();
        let items = self
            .batch_get(
                keys.iter()
                    .map(|a| {
                        HashMap::from([
                            ("pk".to_string(), s(suppression_pk(a))),
                            ("sk".to_string(), s(SUPPRESSED_SK)),
                        ])
                    })
                    .collect(),
                false,
            )
            .await?;
        let mut found = HashMap::new();
        for item in items {
            if let Some(address) = get_s(&item, "address") {
                found.insert(
                    address.clone(),
                    Suppression {
                        address,
                        reason: get_s(&item, "reason").unwrap_or_default(),
                        detail: get_s(&item, "detail"),
                        at: get_s(&item, "at").unwrap_or_default(),
                        message_id: get_s(&item, "source_message_id").unwrap_or_default(),
                    },
                );
            }
        }
        Ok(found)
    }

    /// Marks a finished dispatch's history as stale: a receipt changed a recipient after it
    /// was written.
    pub async fn mark_history_stale(&self, dispatch_id: &str, since: &str) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(STALE_PK))
            .item("sk", s(dispatch_id))
            .item("since", s(since))
            .send()
            .await
            .map_err(Error::aws("PutItem stale history"))?;
        Ok(())
    }

    /// Dispatches whose history is stale, with the mark's time, at most `limit`.
    pub async fn stale_histories(&self, limit: i32) -> Result<Vec<(String, String)>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(STALE_PK))
            .limit(limit)
            .send()
            .await
            .map_err(Error::aws("Query stale histories"))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| Some((get_s(i, "sk")?, get_s(i, "since").unwrap_or_default())))
            .collect())
    }

    /// Clears a stale mark, unless a newer receipt renewed it meanwhile.
    pub async fn history_refreshed(&self, dispatch_id: &str, since: &str) -> Result<bool> {
        match self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(STALE_PK))
            .key("sk", s(dispatch_id))
            .condition_expression("#since = :since")
            .expression_attribute_names("#since", "since")
            .expression_attribute_values(":since", AttributeValue::S(since.to_string()))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if crate::store::is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("DeleteItem stale history")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(p: Parsed) -> Event {
        match p {
            Parsed::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn in_sns(inner: &Value) -> String {
        serde_json::json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:receipts",
            "Message": inner.to_string(),
            "Timestamp": "2026-11-22T10:00:00.000Z",
        })
        .to_string()
    }

    #[test]
    fn a_permanent_bounce_in_an_sns_envelope_suppresses_the_address() {
        let inner = serde_json::json!({
            "eventType": "Bounce",
            "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "Gone@Example.com", "action": "failed",
                    "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": "2026-11-22T10:00:02.000Z"
            },
            "mail": {"timestamp": "2026-11-22T10:00:00.000Z", "messageId": "m-1",
                     "destination": ["Gone@Example.com"]}
        });
        let e = event(parse(&in_sns(&inner)).unwrap());
        assert_eq!(e.message_id, "m-1");
        assert_eq!(e.receipt, Receipt::Bounced);
        assert_eq!(e.at, "2026-11-22T10:00:02.000Z");
        assert_eq!(
            e.detail.as_deref(),
            Some("Permanent/General: smtp; 550 5.1.1 user unknown")
        );
        assert_eq!(e.suppress.len(), 1);
        assert_eq!(e.suppress[0].address, "gone@example.com");
        assert_eq!(e.suppress[0].reason, "bounced");
    }

    #[test]
    fn a_transient_bounce_is_recorded_but_not_suppressed() {
        let inner = serde_json::json!({
            "eventType": "Bounce",
            "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
                "bouncedRecipients": [{"emailAddress": "full@example.com"}],
                "timestamp": "2026-11-22T10:00:02.000Z"},
            "mail": {"timestamp": "2026-11-22T10:00:00.000Z", "messageId": "m-2"}
        });
        let e = event(parse(&inner.to_string()).unwrap());
        assert_eq!(e.receipt, Receipt::Bounced);
        assert!(e.suppress.is_empty());
    }

    #[test]
    fn sms_events_map_to_receipts_and_opt_outs_suppress_the_number() {
        let delivered = serde_json::json!({
            "eventType": "TEXT_DELIVERED", "eventTimestamp": 1795000000000i64,
            "messageId": "s-1", "messageStatus": "DELIVERED",
            "messageStatusDescription": "Message has been accepted by phone",
            "destinationPhoneNumber": "+4520123456"
        });
        let e = event(parse(&in_sns(&delivered)).unwrap());
        assert_eq!(
            (e.receipt, e.message_id.as_str()),
            (Receipt::Delivered, "s-1")
        );
        assert!(e.at.starts_with("2026-11-18T"), "{}", e.at);
        let blocked = serde_json::json!({
            "eventType": "TEXT_BLOCKED", "eventTimestamp": 1795000000000i64,
            "messageId": "s-2", "messageStatus": "OPTED_OUT",
            "destinationPhoneNumber": "+4520123457"
        });
        let e = event(parse(&in_sns(&blocked)).unwrap());
        assert_eq!(e.receipt, Receipt::Undelivered);
        assert_eq!(e.suppress[0].address, "+4520123457");
        assert_eq!(e.suppress[0].reason, "opted_out");
        let queued = serde_json::json!({"eventType": "TEXT_QUEUED", "messageId": "s-3",
            "eventTimestamp": 1795000000000i64});
        assert!(matches!(
            parse(&queued.to_string()).unwrap(),
            Parsed::Ignored(_)
        ));
    }

    #[test]
    fn other_messages_are_ignored_or_refused_with_a_reason() {
        let confirm = serde_json::json!({"Type": "SubscriptionConfirmation", "Message": "x"});
        assert!(matches!(
            parse(&confirm.to_string()).unwrap(),
            Parsed::Ignored(_)
        ));
        let open = serde_json::json!({"eventType": "Open", "mail": {"messageId": "m"}});
        assert!(matches!(
            parse(&open.to_string()).unwrap(),
            Parsed::Ignored(_)
        ));
        assert!(parse("not json").unwrap_err().contains("not JSON"));
        assert!(parse("{\"hello\": 1}").is_err());
        let no_id = serde_json::json!({"eventType": "Delivery", "mail": {}});
        assert!(parse(&no_id.to_string()).unwrap_err().contains("messageId"));
    }

    #[test]
    fn the_sample_events_parse_to_their_receipts() {
        let samples = [
            (
                include_str!("../../events/ses-delivery.json"),
                Receipt::Delivered,
                false,
            ),
            (
                include_str!("../../events/ses-bounce.json"),
                Receipt::Bounced,
                true,
            ),
            (
                include_str!("../../events/ses-complaint.json"),
                Receipt::Complained,
                true,
            ),
            (
                include_str!("../../events/ses-reject.json"),
                Receipt::Rejected,
                false,
            ),
            (
                include_str!("../../events/ses-rendering-failure.json"),
                Receipt::RenderingFailed,
                false,
            ),
            (
                include_str!("../../events/ses-delivery-delay.json"),
                Receipt::Delayed,
                false,
            ),
            (
                include_str!("../../events/sms-delivered.json"),
                Receipt::Delivered,
                false,
            ),
            (
                include_str!("../../events/sms-opted-out.json"),
                Receipt::Undelivered,
                true,
            ),
        ];
        for (text, receipt, suppressed) in samples {
            let e = event(parse(text).unwrap());
            assert_eq!(e.receipt, receipt, "{text}");
            assert_eq!(!e.suppress.is_empty(), suppressed, "{text}");
            assert!(!e.at.is_empty());
        }
    }

    #[test]
    fn stronger_receipts_outrank_weaker_ones() {
        assert!(Receipt::Delayed.rank() < Receipt::Delivered.rank());
        assert!(Receipt::Delivered.rank() < Receipt::Bounced.rank());
        assert!(Receipt::Bounced.rank() < Receipt::Complained.rank());
        for r in Receipt::ALL {
            assert_eq!(r.as_str().parse::<Receipt>().unwrap(), r);
        }
    }
}
