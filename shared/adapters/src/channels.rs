//! Delivery channels: email through SES v2 `SendEmail`, SMS through SNS `Publish`. Errors
//! are sorted by what the sender must do next.

use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use engine::ports::{Attachment, Quota, SendError};
use intake::template::{RenderedEmail, RenderedSms};

const THROTTLE_CODES: [&str; 5] = [
    "TooManyRequestsException",
    "LimitExceededException",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
];

/// Refusals of a request's credentials or signature in time, not of the account.
const EXPIRED_CODES: [&str; 6] = [
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "RequestTimeTooSkewed",
];

/// Refusals of the account or the sender rather than of one recipient: every other send
/// would meet them too, and only a mended configuration ends them.
const BLOCKED_CODES: [&str; 7] = [
    "AccessDeniedException",
    "AccountSuspendedException",
    "SendingPausedException",
    "MailFromDomainNotVerifiedException",
    "NotFoundException",
    "AuthorizationError",
    "AuthorizationErrorException",
];

/// Whether the request failed before a connection to the provider was open.
fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|h| h.is_connect())
            || err
                .downcast_ref::<aws_smithy_runtime_api::client::dns::ResolveDnsError>()
                .is_some()
        {
            return true;
        }
        next = err.source();
    }
    false
}

fn classify<E>(e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> SendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = domain::error::chain(&e);
    match &e {
        SdkError::ConstructionFailure(_) => SendError::Permanent {
            code: "RequestInvalid".into(),
            message: text,
        },
        // Nothing was sent: the connection never opened (refused, DNS failure).
        SdkError::DispatchFailure(_) if never_connected(&e) => SendError::Transient(text),
        // The connection broke or timed out once the request may have gone out: the provider
        // may have taken the message.
        SdkError::DispatchFailure(_) => SendError::Unknown(text),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => SendError::Unknown(text),
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_string();
            let message = se.err().message().unwrap_or_default().to_string();
            let status = se.raw().status().as_u16();
            if EXPIRED_CODES.contains(&code.as_str()) {
                // Credentials or a signature that went stale: new ones come with the next try.
                SendError::Transient(format!("{code}: {message}"))
            } else if BLOCKED_CODES.contains(&code.as_str()) || status == 403 {
                SendError::Blocked(format!("{code}: {message}"))
            } else if THROTTLE_CODES.contains(&code.as_str()) || status == 429 {
                SendError::Throttled(format!("{code}: {message}"))
            } else if status >= 500 {
                SendError::Transient(format!("{code}: {message}"))
            } else {
                SendError::Permanent { code, message }
            }
        }
        _ => SendError::Transient(text),
    }
}

/// Bytes of email a sender process builds and hands to SES at once (in 1 KiB permits): a
/// message with attachments is held about three times over while it goes out (the files,
/// the MIME message, the request's base64), so large messages wait for each other rather
/// than exhaust the function's memory.
const IN_FLIGHT_KIB: u32 = 96 * 1024;

#[derive(Clone, Debug)]
pub struct Mailer {
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A `Name <address>` or bare address as its display name and address.
fn mailbox(s: &str) -> (Option<&str>, &str) {
    match s.trim().rsplit_once('<') {
        Some((name, rest)) => {
            let name = name.trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then_some(name),
                rest.trim_end().trim_end_matches('>').trim(),
            )
        }
        None => (None, s.trim()),
    }
}

/// The MIME message of one email: text and HTML alternatives, reply-to, the attachments.
/// Bcc is never written: those addresses are envelope recipients only.
pub fn mime(to: &str, m: &RenderedEmail, attachments: &[Attachment]) -> std::io::Result<Vec<u8>> {
    use mail_builder::headers::address::Address;
    let from = match mailbox(&m.from) {
        (Some(name), addr) => Address::new_address(Some(name), addr),
        (None, addr) => Address::new_address(None::<&str>, addr),
    };
    let mut b = mail_builder::MessageBuilder::new()
        .from(from)
        .to(to)
        .subject(m.subject.as_str())
        .text_body(m.text.as_str());
    if let Some(h) = &m.html {
        b = b.html_body(h.as_str());
    }
    if !m.reply_to.is_empty() {
        let list: Vec<Address> = m
            .reply_to
            .iter()
            .map(|a| Address::new_address(None::<&str>, mailbox(a).1))
            .collect();
        b = b.reply_to(list);
    }
    if let Some(url) = &m.unsubscribe_url {
        // RFC 8058: a mail client's one-click unsubscribe POSTs to the link.
        b = b
            .header(
                "List-Unsubscribe",
                mail_builder::headers::raw::Raw::new(format!("<{url}>")),
            )
            .header(
                "List-Unsubscribe-Post",
                mail_builder::headers::raw::Raw::new("List-Unsubscribe=One-Click"),
            );
    }
    for a in attachments {
        b = b.attachment(a.content_type.as_str(), a.name.as_str(), a.bytes.as_slice());
    }
    b.write_to_vec()
}

impl Mailer {
    /// A mailer that sends with the given SES configuration set (its event destination
    /// reports receipts).
    pub fn new(client: aws_sdk_sesv2::Client, configuration_set: Option<String>) -> Mailer {
        Mailer {
            client,
            configuration_set,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_KIB as usize)),
        }
    }

    /// The account's quota, when the service tells it (`GetAccount`); `None` when it does
    /// not, and the configured rate applies.
    pub async fn quota(&self) -> Option<Quota> {
        match self.client.get_account().send().await {
            Ok(out) => out.send_quota().map(|q| Quota {
                max_send_rate: q.max_send_rate(),
                max_24_hour_send: q.max24_hour_send(),
                sent_last_24_hours: q.sent_last24_hours(),
            }),
            Err(e) => {
                tracing::info!(error = %domain::error::chain(&e), "no account quota from SES; the configured rate applies");
                None
            }
        }
    }

    /// Sends one email as a MIME message (SES v2 raw content), to `to` and blind-copied to
    /// the message's Bcc; the provider's message id on success.
    pub async fn send(
        &self,
        to: &str,
        m: &RenderedEmail,
        attachments: &[Attachment],
    ) -> Result<String, SendError> {
        let files: usize = attachments.iter().map(|a| a.bytes.len()).sum();
        let kib = u32::try_from(
            (files * 3 + m.text.len() + m.html.as_ref().map_or(0, String::len)) / 1024,
        )
        .unwrap_or(u32::MAX)
        .clamp(1, IN_FLIGHT_KIB);
        let _held = self
            .in_flight
            .acquire_many(kib)
            .await
            .map_err(|e| SendError::Transient(e.to_string()))?;
        let raw = mime(to, m, attachments).map_err(permanent)?;
        if raw.len() > domain::limits::MAX_EMAIL_BYTES {
            return Err(SendError::Permanent {
                code: "message_too_large".into(),
                message: format!(
                    "the email with its attachments is {} bytes; SES takes at most {}",
                    raw.len(),
                    domain::limits::MAX_EMAIL_BYTES
                ),
            });
        }
        let message = RawMessage::builder()
            .data(aws_smithy_types::Blob::new(raw))
            .build()
            .map_err(permanent)?;
        let destination = Destination::builder()
            .to_addresses(to)
            .set_bcc_addresses((!m.bcc.is_empty()).then(|| m.bcc.clone()))
            .build();
        let out = self
            .client
            .send_email()
            .from_email_address(&m.from)
            .destination(destination)
            .content(EmailContent::builder().raw(message).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| sender_refused(classify(e), &m.from))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

/// SES answers `MessageRejected` ("Email address is not verified. The following identities
/// failed the check …") for an unverified recipient in the sandbox and for an unverified
/// sender alike; when the identity that failed is the sender's, every send fails the same way.
fn sender_refused(e: SendError, from: &str) -> SendError {
    match e {
        SendError::Permanent { code, message } if code == "MessageRejected" => {
            let address = crate::senders::address_of(from);
            let domain = address.rsplit_once('@').map(|(_, d)| d.to_string());
            // "… failed the check in region EU-WEST-1: a@example.org, example.org"
            let failed: Vec<String> = message
                .to_lowercase()
                .split_once("failed the check")
                .and_then(|(_, rest)| rest.split_once(':'))
                .map(|(_, list)| {
                    list.split(',')
                        .map(|i| i.trim().trim_matches(['<', '>', '.']).to_string())
                        .collect()
                })
                .unwrap_or_default();
            let senders = failed
                .iter()
                .any(|i| !address.is_empty() && (*i == address || Some(i) == domain.as_ref()));
            if senders {
                SendError::Blocked(format!("{code}: {message}"))
            } else {
                SendError::Permanent { code, message }
            }
        }
        other => other,
    }
}

/// SNS refuses an unverified destination number in its SMS sandbox as an authorization
/// error naming the number: that refusal is the recipient's, not the account's.
fn number_refused(e: SendError, to: &str) -> SendError {
    match e {
        SendError::Blocked(why) if why.contains(to) => SendError::Permanent {
            code: why
                .split(':')
                .next()
                .unwrap_or("AuthorizationError")
                .to_string(),
            message: why,
        },
        other => other,
    }
}

fn permanent(e: impl std::fmt::Display) -> SendError {
    SendError::Permanent {
        code: "RequestInvalid".into(),
        message: e.to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct SmsSender {
    client: aws_sdk_sns::Client,
}

impl SmsSender {
    pub fn new(client: aws_sdk_sns::Client) -> SmsSender {
        SmsSender { client }
    }

    /// Sends one transactional SMS; the provider's message id on success.
    pub async fn send(&self, to: &str, m: &RenderedSms) -> Result<String, SendError> {
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(permanent)
        };
        let mut req = self
            .client
            .publish()
            .phone_number(to)
            .message(&m.text)
            .message_attributes("AWS.SNS.SMS.SMSType", attr("Transactional")?);
        if let Some(id) = &m.sender_id {
            req = req.message_attributes("AWS.SNS.SMS.SenderID", attr(id)?);
        }
        let out = req
            .send()
            .await
            .map_err(|e| number_refused(classify(e), to))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

#[async_trait::async_trait]
impl engine::ports::Mailer for Mailer {
    async fn send_email(
        &self,
        to: &str,
        message: &RenderedEmail,
        attachments: &[Attachment],
    ) -> Result<String, SendError> {
        self.send(to, message, attachments).await
    }

    async fn quota(&self) -> Option<Quota> {
        Mailer::quota(self).await
    }
}

#[async_trait::async_trait]
impl engine::ports::Texter for SmsSender {
    async fn send_sms(&self, to: &str, message: &RenderedSms) -> Result<String, SendError> {
        self.send(to, message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unverified_sender_blocks_and_an_unverified_recipient_fails_alone() {
        let rejected = |message: &str| SendError::Permanent {
            code: "MessageRejected".into(),
            message: message.into(),
        };
        let from = "Town Hall <Notices@Example.org>";
        let sender = rejected("Email address is not verified. The following identities failed the check in region EU-WEST-1: notices@example.org");
        assert!(matches!(
            sender_refused(sender, from),
            SendError::Blocked(_)
        ));
        let recipient = rejected("Email address is not verified. The following identities failed the check in region EU-WEST-1: ann@example.net");
        assert!(matches!(
            sender_refused(recipient, from),
            SendError::Permanent { .. }
        ));
        let lookalike = rejected("Email address is not verified. The following identities failed the check in region EU-WEST-1: xnotices@example.org, notices@example.org.uk");
        assert!(matches!(
            sender_refused(lookalike, from),
            SendError::Permanent { .. }
        ));
        let domain = rejected("Email address is not verified. The following identities failed the check in region EU-WEST-1: ann@example.net, example.org");
        assert!(matches!(
            sender_refused(domain, from),
            SendError::Blocked(_)
        ));
        let number = SendError::Blocked("AuthorizationError: +4520123456 is not verified".into());
        assert!(matches!(
            number_refused(number, "+4520123456"),
            SendError::Permanent { .. }
        ));
        let account =
            SendError::Blocked("AuthorizationError: not authorized to perform sns:Publish".into());
        assert!(matches!(
            number_refused(account, "+4520123456"),
            SendError::Blocked(_)
        ));
        let plain = rejected("Email address is not verified.");
        assert!(matches!(
            sender_refused(plain, from),
            SendError::Permanent { .. }
        ));
    }
}
