//! Receipts: what the providers report after they accepted a message, and what follows from
//! it.
//!
//! - SES publishes email sending events of the dispatch's configuration set to an SNS topic,
//!   and AWS End User Messaging SMS publishes SMS events of its configuration set to the same
//!   topic; the topic feeds the receipts queue. [`parse`] reads one queue message body, with
//!   or without SNS's envelope, into an [`Event`].
//!
//! Suppression entries come with the events that call for them; the receipts function
//! stores them and validation leaves those addresses out of later dispatches.

use domain::model::{rfc3339, Receipt};
use domain::suppression::{suppression_key, Suppression};
use serde_json::Value;

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

/// The text at `path`; none when it is missing or blank (a blank message id or time says
/// nothing).
fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) if s.trim().is_empty() => None,
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
                    .filter(|a| !a.is_empty())
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
                include_str!("../../../events/ses-delivery.json"),
                Receipt::Delivered,
                false,
            ),
            (
                include_str!("../../../events/ses-bounce.json"),
                Receipt::Bounced,
                true,
            ),
            (
                include_str!("../../../events/ses-complaint.json"),
                Receipt::Complained,
                true,
            ),
            (
                include_str!("../../../events/ses-reject.json"),
                Receipt::Rejected,
                false,
            ),
            (
                include_str!("../../../events/ses-rendering-failure.json"),
                Receipt::RenderingFailed,
                false,
            ),
            (
                include_str!("../../../events/ses-delivery-delay.json"),
                Receipt::Delayed,
                false,
            ),
            (
                include_str!("../../../events/sms-delivered.json"),
                Receipt::Delivered,
                false,
            ),
            (
                include_str!("../../../events/sms-opted-out.json"),
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

    #[test]
    fn a_blank_message_id_or_address_is_no_event_to_record() {
        let delivery = serde_json::json!({
            "eventType": "Delivery",
            "mail": {"timestamp": "2026-11-22T10:00:00.000Z", "messageId": "  "},
            "delivery": {"timestamp": "2026-11-22T10:00:01.000Z"}
        });
        let e = parse(&delivery.to_string()).unwrap_err();
        assert!(e.contains("no mail.messageId"), "{e}");
        let sms = serde_json::json!({"eventType": "TEXT_DELIVERED", "messageId": ""});
        assert!(parse(&sms.to_string())
            .unwrap_err()
            .contains("no messageId"));
        let bounce = serde_json::json!({
            "eventType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": " "}, {"emailAddress": "Gone@Example.com"}],
                       "timestamp": "2026-11-22T10:00:02.000Z"},
            "mail": {"timestamp": "2026-11-22T10:00:00.000Z", "messageId": "m-1"}
        });
        let e = event(parse(&bounce.to_string()).unwrap());
        let suppressed: Vec<&str> = e.suppress.iter().map(|s| s.address.as_str()).collect();
        assert_eq!(suppressed, ["gone@example.com"]);
    }
}
