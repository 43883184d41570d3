//! An upload's validation from start to end: a new dispatch, one started through the API,
//! or a repeat with a corrected package (the earlier attempt's documents kept).

use crate::*;

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
        Ok(id) => (id.to_string(), id.folder()),
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
pub(crate) async fn begin_repeat(
    deps: &Deps,
    d: &Dispatch,
    upload: Upload<'_>,
) -> Result<Option<Dispatch>> {
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
