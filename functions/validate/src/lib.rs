//! Validate: reads an uploaded package (manifest, templates, list), checks every row, stores
//! the dispatch and one record per row, writes the report, summary, sample and frozen
//! package, and leaves the dispatch awaiting approval or failed with its reasons.
//!
//! Triggered by the uploads bucket's notification of `incoming/<id>/manifest.json` via SQS.

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
    EmailSource, MessageTemplate, RenderedEmail, RenderedSms, SmsSource, TemplateSource,
};
use intake::validation::{self, Checked, Problem, Validator};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Template files larger than this are refused.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;
/// Recipients written per flush while reading the list.
const FLUSH_EVERY: usize = 1000;
/// Problems shown in the summary (the report has them all).
const SUMMARY_PROBLEMS: usize = 50;
/// Sample messages per channel besides the first valid recipient's, chosen at random.
const RANDOM_SAMPLES: usize = 3;

/// Writes the example file (the header the list must have) as CSV and XLSX.
async fn write_example(
    deps: &Deps,
    id: &str,
    m: &Manifest,
    template: &MessageTemplate,
) -> Result<()> {
    let columns = documents::example::columns(m, template);
    deps.docs
        .put_report_document(
            &keys::example(id, "csv"),
            documents::example::csv(&columns),
            "text/csv; charset=utf-8",
        )
        .await?;
    match documents::example::xlsx(&columns) {
        Ok(bytes) => {
            deps.docs
                .put_report_document(
                    &keys::example(id, "xlsx"),
                    bytes,
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                )
                .await
        }
        Err(e) => {
            tracing::error!(dispatch = %id, error = %e, "the example workbook could not be made");
            Ok(())
        }
    }
}

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub notifier: adapters::notify::Notifier,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        Deps {
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
            notifier: adapters::notify::Notifier::from_config(clients, &config),
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
        let upload = Upload {
            uploader: uploader.as_deref(),
            at: rec.event_time.as_deref(),
        };
        validate_upload(deps, &rec.s3.bucket.name, &key, upload).await?;
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
    /// When the manifest was uploaded.
    #[serde(rename = "eventTime", default)]
    event_time: Option<String>,
}

/// Who uploaded a package's manifest, and when.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upload<'a> {
    pub uploader: Option<&'a str>,
    pub at: Option<&'a str>,
}

/// Whether an upload at `at` is newer than the one a dispatch was validated from. Without
/// times to compare, it is taken as new.
fn is_newer(at: Option<&str>, validated: Option<&str>) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (at.and_then(parse), validated.and_then(parse)) {
        (Some(a), Some(v)) => a > v,
        _ => true,
    }
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

/// Validates the package whose manifest is at `key`. A package uploaded again to the folder
/// of a dispatch that is not yet approved is a repeat: it is validated again and replaces the
/// earlier attempt's results, which stay in the dispatch's `attempts`.
pub async fn validate_upload(
    deps: &Deps,
    bucket: &str,
    key: &str,
    upload: Upload<'_>,
) -> Result<()> {
    let uploader = upload.uploader;
    let (id, prefix) = match manifest::dispatch_of_key(key) {
        Ok(x) => x,
        Err(why) => {
            tracing::error!(key, reason = %why, "upload is not a dispatch package");
            return Ok(());
        }
    };
    let mut dispatch = Dispatch::arrived(&id, &prefix, deps.config.key_shards);
    dispatch.uploaded_at = upload.at.map(str::to_string);
    let dispatch = match deps.store.create_dispatch(&dispatch).await {
        Ok(()) => dispatch,
        Err(Error::Conflict(_)) => {
            let existing = deps
                .store
                .get_dispatch(&id)
                .await?
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            match existing.state {
                // Started through the API: its package has arrived.
                DispatchState::AwaitingUpload => {
                    let at: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)> = upload
                        .at
                        .map(|t| ("uploaded_at", dynamodb::s(t)))
                        .into_iter()
                        .collect();
                    match deps
                        .store
                        .transition(
                            &id,
                            DispatchState::AwaitingUpload,
                            DispatchState::Validating,
                            &at,
                        )
                        .await
                    {
                        Ok(d) => d,
                        // Another delivery of the same notification began it already.
                        Err(Error::Conflict(_)) => {
                            tracing::info!(dispatch = %id, "validation of this upload has begun already");
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                // A redelivered notification of a validation that did not finish: run it
                // again. Records are keyed, so writing them again replaces them.
                DispatchState::Validating => existing,
                DispatchState::ValidationFailed | DispatchState::AwaitingApproval => {
                    if !is_newer(upload.at, existing.uploaded_at.as_deref()) {
                        tracing::info!(dispatch = %id, "notification of an upload already validated; nothing to do");
                        return Ok(());
                    }
                    match begin_repeat(deps, &existing, upload).await? {
                        Some(d) => d,
                        None => return Ok(()),
                    }
                }
                state => {
                    tracing::error!(dispatch = %id, %state,
                        "the dispatch is past approval and cannot be validated again; upload the package to a new folder");
                    return Ok(());
                }
            }
        }
        Err(e) => return Err(e),
    };
    tracing::info!(dispatch = %id, uploader = uploader.unwrap_or("unknown"), attempt = dispatch.attempt, "validating");
    if dispatch.attempt == 1 {
        deps.store
            .audit_or_log(
                &id,
                uploader.unwrap_or("unknown uploader"),
                "upload",
                &format!("package at s3://{bucket}/{prefix}"),
            )
            .await;
    }
    match check_package(deps, bucket, &dispatch).await? {
        Outcome::Failed { title, problems } => {
            tracing::warn!(dispatch = %id, ?problems, "validation failed");
            let failed = deps
                .store
                .transition(
                    &id,
                    DispatchState::Validating,
                    DispatchState::ValidationFailed,
                    &[
                        ("problems", dynamodb::list(&problems)),
                        ("title", dynamodb::s(title)),
                    ],
                )
                .await?;
            let outcome = format!("validation_failed: {}", problems.join("; "));
            deps.store
                .audit_or_log(&id, domain::audit::SYSTEM, "validate", &outcome)
                .await;
            deps.notifier
                .notify(Event::ValidationFailed, &failed, Some(&problems.join("; ")))
                .await;
        }
        Outcome::Checked {
            title,
            counts,
            report_key,
            sample_key,
            package_key,
            list_sha256,
            template_sha256,
        } => {
            let (to, problems) = if counts.valid == 0 {
                (
                    DispatchState::ValidationFailed,
                    vec!["no recipient in the list can be sent to; see the report".to_string()],
                )
            } else {
                (DispatchState::AwaitingApproval, vec![])
            };
            let validated = deps
                .store
                .transition(
                    &id,
                    DispatchState::Validating,
                    to,
                    &[
                        ("title", dynamodb::s(title)),
                        ("total", dynamodb::n(counts.total)),
                        ("valid", dynamodb::n(counts.valid)),
                        ("invalid", dynamodb::n(counts.invalid)),
                        ("excluded", dynamodb::n(counts.excluded)),
                        ("report_key", dynamodb::s(report_key)),
                        ("sample_key", dynamodb::s(sample_key)),
                        ("package_key", dynamodb::s(package_key)),
                        ("list_sha256", dynamodb::s(list_sha256)),
                        ("template_sha256", dynamodb::s(template_sha256)),
                        ("problems", dynamodb::list(&problems)),
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
                .audit_or_log(&id, domain::audit::SYSTEM, "validate", &outcome)
                .await;
            if to == DispatchState::AwaitingApproval {
                deps.notifier
                    .notify(Event::ValidationPassed, &validated, Some(&outcome))
                    .await;
                deps.notifier
                    .notify(Event::ApprovalRequested, &validated, None)
                    .await;
            } else {
                deps.notifier
                    .notify(
                        Event::ValidationFailed,
                        &validated,
                        Some(&problems.join("; ")),
                    )
                    .await;
            }
        }
    }
    Ok(())
}

/// Starts validation attempt n+1 of a dispatch awaiting approval or failed: keeps the
/// attempt's documents and outcome, moves the dispatch back to validating (a conditional
/// write, so of two notifications only one starts it) and deletes the attempt's recipients.
async fn begin_repeat(deps: &Deps, d: &Dispatch, upload: Upload<'_>) -> Result<Option<Dispatch>> {
    let n = d.attempt;
    let keep = |doc: &str| keys::attempt(&d.id, n, doc);
    let mut kept = Vec::new();
    for (from, doc) in [
        (keys::report(&d.id), "validation-report.csv"),
        (keys::summary(&d.id), "validation-summary.json"),
        (keys::sample(&d.id), "sample.json"),
    ] {
        let to = keep(doc);
        kept.push(
            deps.docs
                .copy_report_document(&from, &to)
                .await?
                .then_some(to),
        );
    }
    let mut attempts = d.attempts.clone();
    attempts.push(Attempt {
        attempt: n,
        state: d.state,
        uploaded_at: d.uploaded_at.clone(),
        finished_at: d.updated_at.clone(),
        counts: d.counts,
        problems: d.problems.clone(),
        report_key: kept[0].clone(),
        summary_key: kept[1].clone(),
        sample_key: kept[2].clone(),
    });
    let moved = deps
        .store
        .transition(
            &d.id,
            d.state,
            DispatchState::Validating,
            &[
                ("attempt", dynamodb::n(u64::from(n + 1))),
                ("attempts", dynamodb::dispatches::attempts_value(&attempts)),
                ("uploaded_at", dynamodb::s(upload.at.unwrap_or_default())),
                ("total", dynamodb::n(0)),
                ("valid", dynamodb::n(0)),
                ("invalid", dynamodb::n(0)),
                ("excluded", dynamodb::n(0)),
                ("problems", dynamodb::list(&[])),
            ],
        )
        .await;
    let moved = match moved {
        Ok(m) => m,
        Err(Error::Conflict(_)) => {
            tracing::info!(dispatch = %d.id, "another notification started this repeat");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let deleted = deps.store.delete_recipients(&d.id, d.shards).await?;
    tracing::info!(dispatch = %d.id, attempt = n + 1, deleted, "validating a corrected package");
    deps.store
        .audit_or_log(
            &d.id,
            upload.uploader.unwrap_or("unknown uploader"),
            "repeat",
            &format!(
                "attempt {} replaces attempt {n} ({}: {} rows, {} valid, {} invalid, {} excluded)",
                n + 1,
                d.state,
                d.counts.total,
                d.counts.valid,
                d.counts.invalid,
                d.counts.excluded
            ),
        )
        .await;
    Ok(Some(moved))
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
        list_sha256: String,
        template_sha256: String,
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
    let list = match deps
        .docs
        .fetch_to_file(bucket, &list_key, deps.config.max_list_bytes)
        .await?
    {
        FetchedFile::Found(b) => Some(b),
        FetchedFile::Missing => {
            problems.push(format!(
                "the package has no recipient list '{}'; upload it before manifest.json",
                m.list
            ));
            None
        }
        FetchedFile::TooLarge(size) => {
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
    let Some(list) = list else {
        return Ok(Outcome::Failed { title, problems });
    };
    let source = TemplateSource { email, sms };
    let template = match MessageTemplate::compile(source.clone()) {
        Ok(t) => t,
        Err(e) => return Ok(failed(&title, e.to_string())),
    };
    write_example(deps, &d.id, &m, &template).await?;
    let list_sha256 = list.sha256.clone();
    let template_sha256 = hex::encode(Sha256::digest(
        serde_json::to_vec(&source).map_err(|e| Error::Malformed(e.to_string()))?,
    ));

    let list_size = list.size;
    let mut reader = match ListReader::open_input(
        &m.list,
        Box::new(list.file),
        m.sheet.as_deref(),
        m.encoding
            .as_deref()
            .and_then(domain::manifest::encoding_for),
    ) {
        Ok(r) => r,
        Err(e) => return Ok(failed(&title, e.to_string())),
    };
    if let Some(rows) = reader.declared_rows().filter(|r| *r > deps.config.max_rows) {
        return Ok(failed(
            &title,
            format!(
                "the sheet declares {rows} rows; at most {} are accepted",
                deps.config.max_rows
            ),
        ));
    }
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
    let local = |e: std::io::Error| Error::Aws {
        op: "writing the report to local disk",
        source: Box::new(e),
    };
    let mut report = CsvFile::temporary(&documents::report::REPORT_COLUMNS).map_err(local)?;
    let mut by_code: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_problems: Vec<Problem> = Vec::new();
    let mut samples = Samples::default();
    let mut sms = SmsLength::default();
    let mut buffer: Vec<Checked> = Vec::with_capacity(FLUSH_EVERY);
    let mut tally = Tally {
        counts: &mut counts,
        report: &mut report,
        by_code: &mut by_code,
        first_problems: &mut first_problems,
        samples: &mut samples,
        sms: &mut sms,
    };
    loop {
        validator.presize(&reader, list_size, tally.counts.total, deps.config.max_rows);
        let Some(row) = reader.next_row() else { break };
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
    if let Some(why) = reader.failure() {
        return Ok(failed(
            &title,
            format!("the workbook cannot be read: {why}"),
        ));
    }
    if counts.total == 0 {
        return Ok(failed(
            &title,
            "the recipient list has a header row but no recipients",
        ));
    }

    let report_key = keys::report(&d.id);
    let report_file = report.finish_file().map_err(local)?;
    deps.docs
        .put_report_file(&report_key, report_file.path(), "text/csv; charset=utf-8")
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
        attempt: d.attempt,
        encoding: reader.encoding().map(str::to_string),
        sms,
    };
    deps.docs.put_json(&keys::summary(&d.id), &summary).await?;
    let sample_key = keys::sample(&d.id);
    deps.docs
        .put_json(&sample_key, &samples.render(&template))
        .await?;
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
        list_sha256: package.list_sha256,
        template_sha256: package.template_sha256,
    })
}

/// Where the results of checked rows go.
struct Tally<'a> {
    counts: &'a mut Counts,
    report: &'a mut CsvFile,
    by_code: &'a mut BTreeMap<&'static str, u64>,
    first_problems: &'a mut Vec<Problem>,
    samples: &'a mut Samples,
    sms: &'a mut SmsLength,
}

impl Tally<'_> {
    fn add(&mut self, checked: &Checked) {
        for p in &checked.problems {
            *self.by_code.entry(p.code).or_default() += 1;
            documents::report::report_line(self.report, p);
            if self.first_problems.len() < SUMMARY_PROBLEMS {
                self.first_problems.push(p.clone());
            }
        }
        let r = &checked.recipient;
        match r.state {
            RecipientState::Pending => {
                self.counts.valid += 1;
                self.samples.offer(r);
                if let Some(s) = checked.segments {
                    self.sms.add(s);
                }
            }
            RecipientState::Excluded => self.counts.excluded += 1,
            _ => self.counts.invalid += 1,
        }
    }
}

/// How long the SMS messages of the valid rows are, in segments (what providers charge).
#[derive(Debug, Default, Serialize)]
pub struct SmsLength {
    pub messages: u64,
    pub segments: u64,
    pub max_segments: u64,
    /// Messages that need UCS-2 (characters outside the GSM alphabet): 70 characters each.
    pub ucs2_messages: u64,
}

impl SmsLength {
    fn add(&mut self, s: intake::sms::Segments) {
        self.messages += 1;
        self.segments += s.segments as u64;
        self.max_segments = self.max_segments.max(s.segments as u64);
        if s.encoding == intake::sms::Encoding::Ucs2 {
            self.ucs2_messages += 1;
        }
    }
}

/// The recipients whose messages are shown before approval: per channel the first valid one
/// and a few others chosen uniformly at random among the rest (reservoir sampling, one pass).
#[derive(Default)]
struct Samples {
    per_channel: BTreeMap<Channel, ChannelSamples>,
}

#[derive(Default)]
struct ChannelSamples {
    first: Option<domain::model::Recipient>,
    others: Vec<domain::model::Recipient>,
    /// Valid recipients after the first.
    seen: usize,
}

impl Samples {
    fn offer(&mut self, r: &domain::model::Recipient) {
        use rand::Rng;
        let Some(ch) = r.channel else { return };
        let c = self.per_channel.entry(ch).or_default();
        if c.first.is_none() {
            c.first = Some(r.clone());
            return;
        }
        c.seen += 1;
        if c.others.len() < RANDOM_SAMPLES {
            c.others.push(r.clone());
        } else {
            let slot = rand::rng().random_range(0..c.seen);
            if let Some(s) = c.others.get_mut(slot) {
                *s = r.clone();
            }
        }
    }

    /// The rendered messages, per channel: the first valid recipient's, then the others in
    /// list order.
    fn render(self, t: &MessageTemplate) -> BTreeMap<Channel, Vec<Sample>> {
        self.per_channel
            .into_iter()
            .map(|(ch, c)| {
                let mut others = c.others;
                others.sort_by_key(|r| r.line);
                let samples = c
                    .first
                    .into_iter()
                    .map(|r| (true, r))
                    .chain(others.into_iter().map(|r| (false, r)))
                    .map(|(first, r)| sample(t, ch, first, &r))
                    .collect();
                (ch, samples)
            })
            .collect()
    }
}

/// Applies the suppression list to checked rows, counts and reports them, and stores them.
async fn flush(
    deps: &Deps,
    d: &Dispatch,
    columns: &domain::manifest::Columns,
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
    /// Validation attempt (1, then one more per corrected package).
    pub attempt: u32,
    /// The text encoding a CSV list was read in.
    pub encoding: Option<String>,
    /// Length of the SMS messages of valid rows.
    pub sms: SmsLength,
}

/// A rendered message for one valid recipient, shown to the approver.
#[derive(Debug, Serialize)]
struct Sample {
    recipient_id: String,
    line: u64,
    to: String,
    /// "first" (the first valid recipient) or "random".
    chosen: &'static str,
    #[serde(flatten)]
    body: SampleBody,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum SampleBody {
    Email {
        message: RenderedEmail,
    },
    Sms {
        message: RenderedSms,
        segments: intake::sms::Segments,
    },
    Unrenderable {
        error: String,
    },
}

fn sample(t: &MessageTemplate, ch: Channel, first: bool, r: &domain::model::Recipient) -> Sample {
    let body = match ch {
        Channel::Email => t
            .render_email(&r.fields)
            .map(|message| SampleBody::Email { message }),
        Channel::Sms => t.render_sms(&r.fields).map(|message| SampleBody::Sms {
            segments: intake::sms::segments(&message.text),
            message,
        }),
    };
    Sample {
        recipient_id: r.recipient_id.clone(),
        line: r.line,
        to: r.address.clone().unwrap_or_default(),
        chosen: if first { "first" } else { "random" },
        body: body.unwrap_or_else(|e| SampleBody::Unrenderable {
            error: e.to_string(),
        }),
    }
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
