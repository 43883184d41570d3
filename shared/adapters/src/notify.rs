//! Operator notifications: a message on an SNS topic when a dispatch needs or deserves an
//! operator's attention, so that operators can subscribe (email, chat, a queue of tasks).
//!
//! Each message is JSON with the event, the dispatch and its counts, and carries the event as
//! the message attribute `event`, so a subscription can filter on it. Notifications are best
//! effort: the state change they report is already recorded, so a failed publish is logged
//! and never fails the step that made it.

use aws_sdk_sns::types::MessageAttributeValue;
use domain::model::{now_rfc3339, Dispatch};
use domain::notice::{Event, Notice};

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

#[async_trait::async_trait]
impl engine::ports::Notices for Notifier {
    async fn notify(&self, event: Event, d: &Dispatch, detail: Option<&str>) {
        Notifier::notify(self, event, d, detail).await
    }
}
