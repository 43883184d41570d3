//! Validate: reads an uploaded package (manifest, templates, list), checks every row, stores
//! the dispatch and one record per row, writes the report, summary, sample and frozen
//! package, and leaves the dispatch awaiting approval or failed with its reasons.
//!
//! Triggered by the uploads bucket's notification of `incoming/<id>/manifest.json` via SQS.

mod notification;
mod package;
mod tally;
mod upload;

use notification::*;
pub use notification::{decode_key, Upload};
use package::*;
use tally::*;
pub use tally::{SmsLength, Summary};
pub use upload::validate_upload;

use adapters::dynamodb::{self, Store};
use adapters::s3::{Documents, Fetched, FetchedFile, Package};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use documents::csvout::CsvFile;
use documents::keys;
use domain::config::Config;
use domain::keys::recipient_key;
use domain::manifest::{self, Manifest};
use domain::model::{Attempt, Channel, Counts, Dispatch, DispatchState, RecipientState};
use domain::notice::Event;
use domain::suppression::suppression_key;
use domain::{Error, Result};
use intake::list::ListReader;
use intake::template::{
    EmailSource, FrozenFile, LetterLayout, LetterSource, MessageTemplate, RenderedEmail,
    RenderedLetter, RenderedSms, SmsSource, TemplateSource,
};
use intake::validation::{self, Checked, Problem, Validator};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Template files larger than this are refused.
pub(crate) const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// Recipients written per flush while reading the list.
pub(crate) const FLUSH_EVERY: usize = 1000;

/// Problems shown in the summary (the report has them all).
pub(crate) const SUMMARY_PROBLEMS: usize = 50;

/// Sample messages per channel besides the first valid recipient's, chosen at random.
pub(crate) const RANDOM_SAMPLES: usize = 3;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub notifier: adapters::notify::Notifier,
    pub senders: adapters::senders::Senders,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
            notifier: adapters::notify::Notifier::from_config(clients, &config),
            senders: adapters::senders::Senders::new(clients.sesv2.clone()),
            config,
        }
    }
}

/// Handles a batch of bucket notifications. A record whose work failed for a reason that a
/// retry can mend is reported as a batch item failure; problems with the package itself are
/// recorded on the dispatch and the record succeeds.
pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.unwrap_or_default();
        match handle_body(deps, &body).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() && !id.is_empty() => {
                tracing::warn!(message_id = %id, error = %e, "validation will be retried");
                failures.push(id);
            }
            Err(e) => tracing::error!(message_id = %id, error = %e, "notification dropped"),
        }
    }
    Ok(adapters::sqs::batch_response(failures))
}

pub(crate) async fn handle_body(deps: &Deps, body: &str) -> Result<()> {
    // The bucket sends a test event when notifications are configured: nothing to do.
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| Error::Malformed(format!("notification: {e}")))?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(());
    }
    let event: Notification = serde_json::from_value(value)
        .map_err(|e| Error::Malformed(format!("notification: {e}")))?;
    for rec in event.records {
        let key = decode_key(&rec.s3.object.key);
        let uploader = rec.user_identity.and_then(|u| u.principal_id);
        let upload = Upload {
            uploader: uploader.as_deref(),
            at: rec.event_time.as_deref(),
        };
        validate_upload(deps, &rec.s3.bucket.name, &key, upload).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
