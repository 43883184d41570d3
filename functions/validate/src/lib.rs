//! Validate: reads an uploaded package (manifest, templates, list), checks every row, stores
//! the dispatch and one record per row, writes the report, summary, sample and frozen
//! package, and leaves the dispatch awaiting approval or failed with its reasons.
//!
//! Triggered by the uploads bucket's notification of `incoming/<id>/manifest.json` via SQS.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::config::Config;
use shared::csvout::CsvDoc;
use shared::documents::{keys, Documents, Fetched, Package};
use shared::list::ListReader;
use shared::manifest::{self, Manifest};
use shared::model::{Channel, Counts, Dispatch, DispatchState, RecipientState};
use shared::receipts::suppression_key;
use shared::store::{self, recipient_key, Store};
use shared::template::{
    EmailSource, MessageTemplate, RenderedEmail, RenderedSms, SmsSource, TemplateSource,
};
use shared::validation::{self, Checked, Problem, Validator};
use shared::{Error, Result};
use std::collections::BTreeMap;

/// Template files larger than this are refused.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;
/// Recipients written per flush while reading the list.
const FLUSH_EVERY: usize = 1000;
/// Problems shown in the summary (the report has them all).
const SUMMARY_PROBLEMS: usize = 50;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
}

impl Deps {
    pub fn new(config: Config, clients: &shared::aws::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
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
    Ok(shared::queue::batch_response(failures))
}

async fn handle_body(deps: &Deps, body: &str) -> Result<()> {
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
        validate_upload(deps, &rec.s3.bucket.name, &key, uploader.as_deref()).await?;
    }
    Ok(())
}

/// The part of an S3 event notification the validator reads. Read leniently: only the bucket
/// and key are needed, and emitters differ in the other fields they include.
#[derive(Debug, serde::Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<NotificationRecord>,
}

#[derive(Debug, serde::Deserialize)]
struct NotificationRecord {
    s3: NotificationS3,
    /// Who uploaded the manifest (the IAM principal), when the emitter says.
    #[serde(rename = "userIdentity", default)]
    user_identity: Option<UserIdentity>,
}

#[derive(Debug, serde::Deserialize)]
struct UserIdentity {
    #[serde(rename = "principalId", default)]
    principal_id: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct NotificationS3 {
    bucket: Named,
    object: Keyed,
}

#[derive(Debug, serde::Deserialize)]
struct Named {
    name: String,
}

#[derive(Debug, serde::Deserialize)]
struct Keyed {
    key: String,
}

/// Keys in notifications are URL-encoded with `+` for spaces.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Validates the package whose manifest is at `key`.
pub async fn validate_upload(
    deps: &Deps,
    bucket: &str,
    key: &str,
    uploader: Option<&str>,
) -> Result<()> {
    let (id, prefix) = match manifest::dispatch_of_key(key) {
        Ok(x) => x,
        Err(why) => {
            tracing::error!(key, reason = %why, "upload is not a dispatch package");
            return Ok(());
        }
    };
    let dispatch = Dispatch::arrived(&id, &prefix, deps.config.key_shards);
    let dispatch = match deps.store.create_dispatch(&dispatch).await {
        Ok(()) => dispatch,
        Err(Error::Conflict(_)) => {
            let existing = deps
                .store
                .get_dispatch(&id)
                .await?
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            if existing.state != DispatchState::Validating {
                tracing::error!(dispatch = %id, state = %existing.state,
                    "a dispatch with this id exists already; upload the package to a new folder");
                return Ok(());
            }
            // A redelivered notification of a validation that did not finish: run it again.
            // Records are keyed, so writing them again replaces them.
            existing
        }
        Err(e) => return Err(e),
    };
    tracing::info!(dispatch = %id, uploader = uploader.unwrap_or("unknown"), "validating");
    deps.store
        .audit_or_log(
            &id,
            uploader.unwrap_or("unknown uploader"),
            "upload",
            &format!("package at s3://{bucket}/{prefix}"),
        )
        .await;
    match check_package(deps, bucket, &dispatch).await? {
        Outcome::Failed { title, problems } => {
            tracing::warn!(dispatch = %id, ?problems, "validation failed");
            deps.store
                .transition(
                    &id,
                    DispatchState::Validating,
                    DispatchState::ValidationFailed,
                    &[
                        ("problems", store::list(&problems)),
                        ("title", store::s(title)),
                    ],
                )
                .await?;
            let outcome = format!("validation_failed: {}", problems.join("; "));
            deps.store
                .audit_or_log(&id, shared::audit::SYSTEM, "validate", &outcome)
                .await;
        }
        Outcome::Checked {
            title,
            counts,
            report_key,
            sample_key,
            package_key,
        } => {
            let (to, problems) = if counts.valid == 0 {
                (
                    DispatchState::ValidationFailed,
                    vec!["no recipient in the list can be sent to; see the report".to_string()],
                )
            } else {
                (DispatchState::AwaitingApproval, vec![])
            };
            deps.store
                .transition(
                    &id,
                    DispatchState::Validating,
                    to,
                    &[
                        ("title", store::s(title)),
                        ("total", store::n(counts.total)),
                        ("valid", store::n(counts.valid)),
                        ("invalid", store::n(counts.invalid)),
                        ("excluded", store::n(counts.excluded)),
                        ("report_key", store::s(report_key)),
                        ("sample_key", store::s(sample_key)),
                        ("package_key", store::s(package_key)),
                        ("problems", store::list(&problems)),
                    ],
                )
                .await?;
            tracing::info!(dispatch = %id, state = %to, total = counts.total, valid = counts.valid,
                invalid = counts.invalid, excluded = counts.excluded, "validated");
            let outcome = format!(
                "{to}: {} rows, {} valid, {} invalid, {} excluded",
                counts.total, counts.valid, counts.invalid, counts.excluded
            );
            deps.store
                .audit_or_log(&id, shared::audit::SYSTEM, "validate", &outcome)
                .await;
        }
    }
    Ok(())
}

enum Outcome {
    /// The package cannot be sent; nothing was stored for its rows.
    Failed {
        title: String,
        problems: Vec<String>,
    },
    /// Every row was checked and stored.
    Checked {
        title: String,
        counts: Counts,
        report_key: String,
        sample_key: String,
        package_key: String,
    },
}

fn failed(title: &str, problem: impl Into<String>) -> Outcome {
    Outcome::Failed {
        title: title.to_string(),
        problems: vec![problem.into()],
    }
}

/// Reads one text file of the package; `Err(problem)` when it is missing or unusable.
async fn package_text(
    deps: &Deps,
    bucket: &str,
    prefix: &str,
    name: &str,
    what: &str,
) -> Result<Result<String, String>> {
    let key = format!("{prefix}{name}");
    Ok(
        match deps.docs.fetch(bucket, &key, MAX_TEMPLATE_BYTES).await? {
            Fetched::Missing => Err(format!(
                "the package has no file '{name}' ({what}); upload it before manifest.json"
            )),
            Fetched::TooLarge(size) => Err(format!(
                "'{name}' ({what}) is {size} bytes; at most {MAX_TEMPLATE_BYTES} are accepted"
            )),
            Fetched::Found(bytes) => match String::from_utf8(bytes) {
                Ok(t) => Ok(t.strip_prefix('\u{feff}').unwrap_or(&t).to_string()),
                Err(_) => Err(format!("'{name}' ({what}) is not UTF-8 text")),
            },
        },
    )
}

async fn check_package(deps: &Deps, bucket: &str, d: &Dispatch) -> Result<Outcome> {
    let prefix = &d.source_prefix;
    let manifest_bytes = match deps
        .docs
        .fetch(
            bucket,
            &format!("{prefix}{}", manifest::MANIFEST_FILE),
            MAX_TEMPLATE_BYTES,
        )
        .await?
    {
        Fetched::Found(b) => b,
        Fetched::Missing => {
            return Ok(failed(
                &d.id,
                "manifest.json was removed before it could be read",
            ))
        }
        Fetched::TooLarge(_) => return Ok(failed(&d.id, "manifest.json is larger than 1 MiB")),
    };
    let m = match Manifest::parse(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => return Ok(failed(&d.id, e.to_string())),
    };
    let title = m.title.trim().to_string();

    // Templates: every missing or broken part is reported at once.
    let mut problems = Vec::new();
    let mut email = None;
    if let Some(e) = &m.email {
        let text = package_text(deps, bucket, prefix, &e.text, "email text").await?;
        let html = match &e.html {
            Some(h) => Some(package_text(deps, bucket, prefix, h, "email html").await?),
            None => None,
        };
        match (text, html.transpose()) {
            (Ok(text), Ok(html)) => {
                email = Some(EmailSource {
                    from: e.from.clone(),
                    subject: e.subject.clone(),
                    text,
                    html,
                })
            }
            (t, h) => problems.extend(t.err().into_iter().chain(h.err())),
        }
    }
    let mut sms = None;
    if let Some(s) = &m.sms {
        match package_text(deps, bucket, prefix, &s.text, "sms text").await? {
            Ok(text) => {
                sms = Some(SmsSource {
                    text,
                    sender_id: s.sender_id.clone(),
                })
            }
            Err(p) => problems.push(p),
        }
    }
    let list_key = format!("{prefix}{}", m.list);
    let list_bytes = match deps
        .docs
        .fetch(bucket, &list_key, deps.config.max_list_bytes)
        .await?
    {
        Fetched::Found(b) => Some(b),
        Fetched::Missing => {
            problems.push(format!(
                "the package has no recipient list '{}'; upload it before manifest.json",
                m.list
            ));
            None
        }
        Fetched::TooLarge(size) => {
            problems.push(format!(
                "the recipient list is {size} bytes; at most {} are accepted",
                deps.config.max_list_bytes
            ));
            None
        }
    };
    if !problems.is_empty() {
        return Ok(Outcome::Failed { title, problems });
    }
    let Some(list_bytes) = list_bytes else {
        return Ok(Outcome::Failed { title, problems });
    };
    let source = TemplateSource { email, sms };
    let template = match MessageTemplate::compile(source.clone()) {
        Ok(t) => t,
        Err(e) => return Ok(failed(&title, e.to_string())),
    };
    let list_sha256 = hex::encode(Sha256::digest(&list_bytes));
    let template_sha256 = hex::encode(Sha256::digest(
        serde_json::to_vec(&source).map_err(|e| Error::Malformed(e.to_string()))?,
    ));

    let mut reader = match ListReader::open_with(
        &m.list,
        list_bytes,
        m.sheet.as_deref(),
        m.encoding.as_deref().and_then(shared::list::encoding_for),
    ) {
        Ok(r) => r,
        Err(e) => return Ok(failed(&title, e.to_string())),
    };
    let headers = reader.headers().to_vec();
    let mut validator = match Validator::new(
        &d.id,
        &m,
        &template,
        &headers,
        &deps.config.default_phone_region,
    ) {
        Ok(v) => v,
        Err(problems) => return Ok(Outcome::Failed { title, problems }),
    };

    let mut counts = Counts::default();
    let mut report = CsvDoc::new(&["line", "recipient_id", "column", "code", "message"]);
    let mut by_code: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_problems: Vec<Problem> = Vec::new();
    let mut samples: BTreeMap<Channel, Sample> = BTreeMap::new();
    let mut buffer: Vec<Checked> = Vec::with_capacity(FLUSH_EVERY);
    let mut tally = Tally {
        counts: &mut counts,
        report: &mut report,
        by_code: &mut by_code,
        first_problems: &mut first_problems,
        samples: &mut samples,
        template: &template,
    };
    while let Some(row) = reader.next_row() {
        tally.counts.total += 1;
        if tally.counts.total > deps.config.max_rows {
            return Ok(failed(
                &title,
                format!(
                    "the list has more than {} rows, the most accepted",
                    deps.config.max_rows
                ),
            ));
        }
        let checked = match row {
            Ok(row) => validator.check(&row),
            Err(e) => validator.unreadable(e.line, &e.message),
        };
        buffer.push(checked);
        if buffer.len() >= FLUSH_EVERY {
            flush(deps, d, &m.columns, &mut buffer, &mut tally).await?;
        }
    }
    flush(deps, d, &m.columns, &mut buffer, &mut tally).await?;
    if counts.total == 0 {
        return Ok(failed(
            &title,
            "the recipient list has a header row but no recipients",
        ));
    }

    let report_key = keys::report(&d.id);
    deps.docs
        .put_report_document(&report_key, report.finish(), "text/csv; charset=utf-8")
        .await?;
    let summary = Summary {
        dispatch_id: d.id.clone(),
        title: title.clone(),
        total: counts.total,
        valid: counts.valid,
        invalid: counts.invalid,
        excluded: counts.excluded,
        problems_by_code: by_code,
        first_problems,
        merge_fields: template.all_fields().into_iter().collect(),
    };
    deps.docs.put_json(&keys::summary(&d.id), &summary).await?;
    let sample_key = keys::sample(&d.id);
    deps.docs.put_json(&sample_key, &samples).await?;
    let package_key = keys::package(&d.id);
    let package = Package {
        dispatch_id: d.id.clone(),
        manifest: m.clone(),
        template: source,
        list_key,
        list_sha256,
        template_sha256,
    };
    deps.docs.put_json(&package_key, &package).await?;
    Ok(Outcome::Checked {
        title,
        counts,
        report_key,
        sample_key,
        package_key,
    })
}

/// Where the results of checked rows go.
struct Tally<'a> {
    counts: &'a mut Counts,
    report: &'a mut CsvDoc,
    by_code: &'a mut BTreeMap<&'static str, u64>,
    first_problems: &'a mut Vec<Problem>,
    samples: &'a mut BTreeMap<Channel, Sample>,
    template: &'a MessageTemplate,
}

impl Tally<'_> {
    fn add(&mut self, checked: &Checked) {
        for p in &checked.problems {
            *self.by_code.entry(p.code).or_default() += 1;
            let line = p.line.to_string();
            self.report.row([
                line.as_str(),
                &p.recipient_id,
                &p.column,
                p.code,
                &p.message,
            ]);
            if self.first_problems.len() < SUMMARY_PROBLEMS {
                self.first_problems.push(p.clone());
            }
        }
        let r = &checked.recipient;
        match r.state {
            RecipientState::Pending => {
                self.counts.valid += 1;
                if let (Some(ch), Some(to)) = (r.channel, r.address.as_deref()) {
                    if let std::collections::btree_map::Entry::Vacant(slot) = self.samples.entry(ch)
                    {
                        slot.insert(sample(self.template, ch, &r.recipient_id, to, &r.fields));
                    }
                }
            }
            RecipientState::Excluded => self.counts.excluded += 1,
            _ => self.counts.invalid += 1,
        }
    }
}

/// Applies the suppression list to checked rows, counts and reports them, and stores them.
async fn flush(
    deps: &Deps,
    d: &Dispatch,
    columns: &shared::manifest::Columns,
    buffer: &mut Vec<Checked>,
    tally: &mut Tally<'_>,
) -> Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    let addresses: Vec<String> = buffer
        .iter()
        .filter(|c| c.recipient.state == RecipientState::Pending)
        .filter_map(|c| c.recipient.address.clone())
        .collect();
    let suppressed = deps.store.suppressed(&addresses).await?;
    let mut rows = Vec::with_capacity(buffer.len());
    for mut checked in buffer.drain(..) {
        if checked.recipient.state == RecipientState::Pending {
            let entry = checked
                .recipient
                .address
                .as_deref()
                .and_then(|a| suppressed.get(&suppression_key(a)));
            if let Some(entry) = entry {
                validation::exclude_suppressed(&mut checked, entry, columns);
            }
        }
        tally.add(&checked);
        let key = recipient_key(&checked.recipient, checked.keyed_by_id, d.shards);
        rows.push((key, checked.recipient));
    }
    deps.store.put_recipients(&rows).await
}

/// Counts per problem code and the first problems; the API shows it with the dispatch.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dispatch_id: String,
    pub title: String,
    pub total: u64,
    pub valid: u64,
    pub invalid: u64,
    /// Valid rows left out by exclusions (the suppression list).
    pub excluded: u64,
    pub problems_by_code: BTreeMap<&'static str, u64>,
    pub first_problems: Vec<Problem>,
    pub merge_fields: Vec<String>,
}

/// A rendered message for one valid recipient, shown to the approver.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Sample {
    Email {
        recipient_id: String,
        to: String,
        message: RenderedEmail,
    },
    Sms {
        recipient_id: String,
        to: String,
        message: RenderedSms,
    },
    Unrenderable {
        recipient_id: String,
        error: String,
    },
}

fn sample(
    t: &MessageTemplate,
    ch: Channel,
    id: &str,
    to: &str,
    fields: &BTreeMap<String, String>,
) -> Sample {
    let (recipient_id, to) = (id.to_string(), to.to_string());
    let rendered = match ch {
        Channel::Email => t.render_email(fields).map(|message| Sample::Email {
            recipient_id: recipient_id.clone(),
            to,
            message,
        }),
        Channel::Sms => t.render_sms(fields).map(|message| Sample::Sms {
            recipient_id: recipient_id.clone(),
            to,
            message,
        }),
    };
    rendered.unwrap_or_else(|e| Sample::Unrenderable {
        recipient_id,
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_keys_are_decoded() {
        assert_eq!(
            decode_key("incoming%2Fwinter%2Fmanifest.json"),
            "incoming/winter/manifest.json"
        );
        assert_eq!(
            decode_key("incoming/a+b/manifest.json"),
            "incoming/a b/manifest.json"
        );
        assert_eq!(decode_key("incoming/%C3%A6/x"), "incoming/æ/x");
    }
}
