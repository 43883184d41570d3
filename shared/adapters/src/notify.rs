//! Operator notifications: a message on an SNS topic when a dispatch needs or deserves an
//! operator's attention, so that operators can subscribe (email, chat, a queue of tasks).
//!
//! Each message is JSON with the event, the dispatch and its counts, and carries the event as
//! the message attribute `event`, so a subscription can filter on it. Notifications are best
//! effort: the state change they report is already recorded, so a failed publish is logged
//! and never fails the step that made it.

use aws_sdk_sns::types::MessageAttributeValue;
use domain::model::{now_rfc3339, Counts, Dispatch};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Validation finished and the list can be sent.
    ValidationPassed,
    /// Validation finished with a file-level problem or nothing to send.
    ValidationFailed,
    /// A validated dispatch waits for a second person's approval.
    ApprovalRequested,
    /// The provider throttled the dispatch; it continues by itself at `resume_at`.
    WaitingForContinuation,
    /// Every recipient has a final state.
    Completed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::ValidationPassed => "validation_passed",
            Event::ValidationFailed => "validation_failed",
            Event::ApprovalRequested => "approval_requested",
            Event::WaitingForContinuation => "waiting_for_continuation",
            Event::Completed => "completed",
        }
    }

    fn headline(self) -> &'static str {
        match self {
            Event::ValidationPassed => "validation passed",
            Event::ValidationFailed => "validation failed",
            Event::ApprovalRequested => "approval requested",
            Event::WaitingForContinuation => "waiting for continuation",
            Event::Completed => "completed",
        }
    }
}

/// What a notification says.
#[derive(Debug, Serialize)]
pub struct Notice<'a> {
    pub event: Event,
    pub dispatch_id: &'a str,
    pub title: &'a str,
    pub state: &'a str,
    pub counts: &'a Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct Notifier {
    sns: aws_sdk_sns::Client,
    topic_arn: Option<String>,
}

impl Notifier {
    /// Publishes to `topic_arn`; without one, notifications are only logged.
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: Option<String>) -> Notifier {
        Notifier { sns, topic_arn }
    }

    pub fn from_config(
        clients: &crate::clients::Clients,
        config: &domain::config::Config,
    ) -> Notifier {
        Notifier::new(clients.sns.clone(), config.operator_topic_arn.clone())
    }

    /// Tells the operators about `d`.
    pub async fn notify(&self, event: Event, d: &Dispatch, detail: Option<&str>) {
        let Some(topic) = &self.topic_arn else {
            tracing::debug!(dispatch = %d.id, event = event.as_str(), "no operator topic configured");
            return;
        };
        let notice = Notice {
            event,
            dispatch_id: &d.id,
            title: &d.title,
            state: d.state.as_str(),
            counts: &d.counts,
            detail,
            at: now_rfc3339(),
        };
        let message = match serde_json::to_string(&notice) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(dispatch = %d.id, error = %e, "notification not written");
                return;
            }
        };
        // SNS subjects: at most 100 characters, no line breaks.
        let subject: String = format!("Dispatch {}: {}", d.title, event.headline())
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(event.as_str())
            .build();
        let mut publish = self
            .sns
            .publish()
            .topic_arn(topic)
            .subject(subject)
            .message(message);
        if let Ok(a) = attribute {
            publish = publish.message_attributes("event", a);
        }
        match publish.send().await {
            Ok(_) => tracing::info!(dispatch = %d.id, event = event.as_str(), "operators notified"),
            Err(e) => tracing::error!(
                dispatch = %d.id,
                event = event.as_str(),
                error = %aws_smithy_types::error::display::DisplayErrorContext(&e),
                "operators not notified"
            ),
        }
    }
}
