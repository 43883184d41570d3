//! Operators' jobs ([`domain::job::Job`]) on the settle queue: resend by state a page of
//! records at a time, continuing in a new message when the invocation's time runs short; the
//! history written again; the download. Progress is written after every page, so the portal
//! sees it move.

use crate::{hand_out, settle_queue, Deps, Pages, Report, PASS_PAGE};
use adapters::sqs;
use domain::job::{Job, JobKind, JobState, ListFormat};
use domain::model::{Dispatch, DispatchState, RecipientState};
use domain::queue::{Settle, SettleWork};
use domain::{Error, Result};

/// Runs job `job_id` of `d` from `(shard, after)`.
pub(crate) async fn run(
    deps: &Deps,
    d: &Dispatch,
    job_id: &str,
    from: (u32, Option<String>),
    deadline: domain::Deadline,
    report: &mut Report,
) -> Result<()> {
    let Some(mut job) = deps.store.get_job(&d.id, job_id).await? else {
        tracing::warn!(dispatch = %d.id, job = %job_id, "no such job; nothing to do");
        return Ok(());
    };
    if job.state.is_finished() {
        return Ok(());
    }
    job.state = JobState::Running;
    match job.kind.clone() {
        JobKind::Resend { states } => {
            if !resend(deps, d, &mut job, &states, from, deadline).await? {
                report.jobs_continued.push(job.id.clone());
                return Ok(());
            }
        }
        JobKind::Download { format } => download(deps, d, &mut job, format).await?,
        JobKind::History => history(deps, d, &mut job).await?,
        JobKind::Print { generation } => {
            if !crate::print::build(deps, d, &mut job, generation, from.0, deadline).await? {
                report.jobs_continued.push(job.id.clone());
                return Ok(());
            }
        }
    }
    deps.store.put_job(&job).await?;
    report.jobs_finished.push(job.id.clone());
    Ok(())
}

/// Resends a page at a time; false when the job goes on in a new message (saved as it came).
async fn resend(
    deps: &Deps,
    d: &Dispatch,
    job: &mut Job,
    states: &[RecipientState],
    from: (u32, Option<String>),
    deadline: domain::Deadline,
) -> Result<bool> {
    let mut pages = Pages::from(d.shards, from);
    let mut moved = false;
    while let Some((shard, after)) = pages.next_query() {
        if pages.out_of_time(deadline) {
            job.updated_at = domain::model::now_rfc3339();
            deps.store.put_job(job).await?;
            let from = (pages.shard, pages.after.take());
            sqs::send_job(&deps.sqs, settle_queue(deps)?, &d.id, &job.id, from).await?;
            return Ok(false);
        }
        let page = deps
            .store
            .query_shard(&d.id, shard, None, after, PASS_PAGE)
            .await?;
        pages.reached(page.next.clone());
        job.looked_at += page.recipients.len() as u64;
        let chosen: Vec<_> = page
            .recipients
            .into_iter()
            .filter(|(_, r)| states.contains(&r.state))
            .collect();
        if !chosen.is_empty() {
            // The first resend begins attempt `d.send_attempt + 1` (conditional on the
            // dispatch's still having completed with errors); the rest continue it.
            let done = deps
                .store
                .resend_as(d, &chosen, &job.requested_by, job.send_attempt)
                .await?;
            if job.send_attempt.is_none() && !done.done.is_empty() {
                job.send_attempt = Some(d.send_attempt + 1);
            }
            job.done += done.done.len() as u64;
            job.skipped += done.skipped.len() as u64;
            if done.dispatch_moved {
                moved = true;
                break;
            }
        }
        job.updated_at = domain::model::now_rfc3339();
        deps.store.put_job(job).await?;
    }
    let action = job.kind.action();
    if job.done == 0 {
        let why = if moved {
            format!(
                "the dispatch is no longer {}",
                DispatchState::CompletedWithErrors
            )
        } else {
            "the recipients changed meanwhile".to_string()
        };
        let outcome = format!("refused: nothing was resent: {why}");
        deps.store
            .audit_or_log(&d.id, &job.requested_by, action, &outcome)
            .await;
        job.finish(JobState::Failed, outcome);
    } else {
        let mut outcome = format!(
            "send attempt {}: {} sent again (job {})",
            job.send_attempt.unwrap_or_default(),
            job.done,
            job.id
        );
        if job.skipped > 0 {
            outcome.push_str(&format!("; {} had changed and were left", job.skipped));
        }
        if moved {
            outcome.push_str("; the dispatch moved on before the rest");
        }
        deps.store
            .audit_or_log(&d.id, &job.requested_by, action, &outcome)
            .await;
        // Should this fail, the stall check hands the pending recipients out.
        hand_out(deps, d).await?;
        job.finish(JobState::Succeeded, outcome);
    }
    Ok(true)
}

/// The list with every status, written once; the job keeps its key for fresh links.
async fn download(deps: &Deps, d: &Dispatch, job: &mut Job, format: ListFormat) -> Result<()> {
    match adapters::download::write(
        &deps.store,
        &deps.docs,
        d,
        format.into(),
        deps.config.max_list_bytes,
    )
    .await?
    {
        Ok(w) => {
            job.looked_at = w.records;
            job.done = w.rows;
            job.result_key = Some(w.key);
            job.result_name = Some(w.filename);
            job.finish(
                JobState::Succeeded,
                format!("{} rows with their statuses", w.rows),
            );
        }
        Err(refusal) => job.finish(JobState::Failed, refusal.message()),
    }
    Ok(())
}

/// One pass over the records into the history on temporary disk.
async fn history(deps: &Deps, d: &Dispatch, job: &mut Job) -> Result<()> {
    match deps.completer.write_history(d).await {
        Ok(_) => {
            job.looked_at = d.counts.total;
            job.done = d.counts.total;
            job.finish(
                JobState::Succeeded,
                format!("history written again: {} rows", d.counts.total),
            );
            Ok(())
        }
        // Never written while recipients are open: waiting would not change that.
        Err(Error::Conflict(why)) => {
            job.finish(JobState::Failed, why);
            Ok(())
        }
        // Tried again when the message comes back.
        Err(e) => Err(e),
    }
}

/// Ends the job of a settle message that will not be delivered again.
pub(crate) async fn give_up(deps: &Deps, work: &Settle, e: &Error) {
    let SettleWork::Job { job_id, .. } = &work.work else {
        return;
    };
    match deps.store.get_job(&work.dispatch_id, job_id).await {
        Ok(Some(mut job)) if !job.state.is_finished() => {
            if let JobKind::Print { generation } = job.kind {
                if let Ok(Some(mut run)) = deps.store.get_print(&work.dispatch_id).await {
                    if run.generation == generation {
                        crate::print::mark_failed(deps, &mut run).await;
                    }
                }
            }
            job.finish(
                JobState::Failed,
                format!(
                    "the worker gave up after {} tries: {e}",
                    deps.config.max_receives
                ),
            );
            if let Err(e) = deps.store.put_job(&job).await {
                tracing::error!(job = %job_id, error = %e, "job not marked failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(job = %job_id, error = %e, "job not marked failed"),
    }
}
