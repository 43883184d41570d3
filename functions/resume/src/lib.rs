//! Resume: runs on a schedule and moves along what an interrupted step left behind.
//!
//! - A dispatch waiting for continuation whose `resume_at` has come goes back to sending, and
//!   its recipients not yet sent are handed to the senders again.
//! - A sending dispatch whose counters have not moved for a while is looked at record by
//!   record: a claim older than the claim expiry with no result (a sender that died after
//!   calling the provider) becomes `unknown`, never re-sent; the counters are recounted (an
//!   update lost to a crash); recipients still pending are handed out again; and the dispatch
//!   completes when nothing is outstanding.
//! - An approved dispatch that fan-out never picked up (the enqueue after approval failed) is
//!   fanned out again; sending is idempotent, so a second fan-out sends nothing twice.
//! - A dispatch rejected while sending has its rejection handed out again for as long as a
//!   claim could still be given back (`CLAIM_EXPIRY_SECS`), so no recipient stays pending.
//! - A completed dispatch without its history document gets it.
//! - A finished dispatch whose recipients got receipts after its history was written gets
//!   its history written again.

use adapters::dynamodb::Store;
use adapters::s3::Documents;
use adapters::sqs;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use domain::config::Config;
use domain::model::{age_secs, Dispatch, DispatchState, RecipientState};
use domain::queue::FanOutAction;
use domain::{Error, Result};
use engine::completion::Completer;
use engine::ports::Completion;
use serde::Serialize;

/// An approved dispatch older than this is fanned out again.
pub const REFAN_AFTER_SECS: i64 = 60;
/// Time kept free before the deadline for the rest of a run (continuations, histories).
pub const MARGIN: std::time::Duration = std::time::Duration::from_secs(60);
/// Dispatches looked at per state and run.
const PER_STATE: i32 = 100;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub sqs: aws_sdk_sqs::Client,
    pub notifier: adapters::notify::Notifier,
    pub completer: Completer,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        Deps {
            completer: adapters::wiring::completer(clients, &config),
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
            sqs: clients.sqs.clone(),
            notifier: adapters::notify::Notifier::from_config(clients, &config),
            config,
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub completed: Vec<String>,
    pub continued: Vec<String>,
    pub recounted: Vec<String>,
    /// Recipients whose claim expired without a result, by dispatch.
    pub expired_claims: Vec<(String, u64)>,
    pub fanned_out_again: Vec<String>,
    /// Dispatches rejected lately, whose rejection was handed out again.
    pub rejections_handed_out: Vec<String>,
    pub histories_written: Vec<String>,
    /// Finished dispatches whose history was written again after receipts arrived.
    pub histories_refreshed: Vec<String>,
}

/// One scheduled run. It stops settling dispatches when less than [`MARGIN`] is left before
/// `deadline` (when Lambda ends the invocation); the next run, a minute later, goes on.
pub async fn handle(
    deps: &Deps,
    _event: EventBridgeEvent<serde_json::Value>,
    deadline: domain::Deadline,
) -> Result<Report, Error> {
    let mut report = Report::default();
    for d in deps
        .store
        .list_dispatches(Some(DispatchState::Sending), PER_STATE)
        .await?
    {
        if deadline.remaining() < MARGIN {
            tracing::warn!(dispatch = %d.id, "no time left in this run; the next run settles the rest");
            return Ok(report);
        }
        if let Err(e) = settle_sending(deps, &d, &mut report).await {
            tracing::error!(dispatch = %d.id, error = %e, "could not settle dispatch");
        }
    }
    for d in deps
        .store
        .list_dispatches(Some(DispatchState::WaitingForContinuation), PER_STATE)
        .await?
    {
        if d.resume_at.as_deref().is_some_and(|t| age_secs(t) < 0) {
            continue;
        }
        match deps
            .store
            .transition(
                &d.id,
                DispatchState::WaitingForContinuation,
                DispatchState::Sending,
                &[],
            )
            .await
        {
            Ok(_) => {
                match hand_out(deps, &d).await {
                    Ok(()) => report.continued.push(d.id.clone()),
                    // Left sending with recipients pending: the stall check hands them out.
                    Err(e) => {
                        tracing::error!(dispatch = %d.id, error = %e, "continuation not queued")
                    }
                }
            }
            Err(Error::Conflict(_)) => {}
            Err(e) => tracing::error!(dispatch = %d.id, error = %e, "could not continue dispatch"),
        }
    }
    for d in deps
        .store
        .list_dispatches(Some(DispatchState::Approved), PER_STATE)
        .await?
    {
        if age_secs(&d.updated_at) >= REFAN_AFTER_SECS {
            match hand_out(deps, &d).await {
                Ok(()) => report.fanned_out_again.push(d.id.clone()),
                Err(e) => tracing::error!(dispatch = %d.id, error = %e, "fan-out not re-issued"),
            }
        }
    }
    // A dispatch rejected while sending: a claim given back after the rejection leaves its
    // recipient pending, so the rejection is handed out again (only pending recipients
    // change) until no claim can come back any more.
    for d in deps
        .store
        .list_dispatches(Some(DispatchState::Rejected), PER_STATE)
        .await?
    {
        if age_secs(&d.updated_at) <= deps.config.claim_expiry_secs as i64 + REFAN_AFTER_SECS {
            match sqs::fan_out_all(
                &deps.sqs,
                &deps.config.fanout_queue_url,
                &d,
                FanOutAction::Reject,
            )
            .await
            {
                Ok(()) => report.rejections_handed_out.push(d.id.clone()),
                Err(e) => tracing::error!(dispatch = %d.id, error = %e, "rejection not re-issued"),
            }
        }
    }
    match deps.completer.refresh_stale_histories(PER_STATE).await {
        Ok(ids) => report.histories_refreshed = ids,
        Err(e) => tracing::error!(error = %e, "stale histories not refreshed"),
    }
    for state in [
        DispatchState::Completed,
        DispatchState::CompletedWithErrors,
        DispatchState::Closed,
    ] {
        for d in deps.store.list_dispatches(Some(state), PER_STATE).await? {
            if d.history_key.is_none() {
                match deps.completer.write_history(&d).await {
                    Ok(_) => report.histories_written.push(d.id.clone()),
                    Err(e) => tracing::error!(dispatch = %d.id, error = %e, "history not written"),
                }
            }
        }
    }
    if report != Report::default() {
        tracing::info!(?report, "resume run");
    }
    Ok(report)
}

/// Where a pass over a dispatch's shards has come: the shard and the sort key to continue
/// after.
struct Pages {
    shards: u32,
    shard: u32,
    after: Option<String>,
}

impl Pages {
    fn new(shards: u32) -> Pages {
        Pages {
            shards,
            shard: 0,
            after: None,
        }
    }

    /// The next page to ask for, `None` when every shard has been read.
    fn next_query(&self) -> Option<(u32, Option<String>)> {
        (self.shard < self.shards).then(|| (self.shard, self.after.clone()))
    }

    /// A page came back with `next`: the same shard goes on, or the next shard starts.
    fn reached(&mut self, next: Option<String>) {
        match next {
            Some(n) => self.after = Some(n),
            None => {
                self.shard += 1;
                self.after = None;
            }
        }
    }
}

/// Hands a dispatch's pending recipients to the senders again (through fan-out).
async fn hand_out(deps: &Deps, d: &Dispatch) -> Result<()> {
    sqs::fan_out_all(
        &deps.sqs,
        &deps.config.fanout_queue_url,
        d,
        FanOutAction::Send,
    )
    .await
}

async fn settle_sending(deps: &Deps, d: &Dispatch, report: &mut Report) -> Result<()> {
    let mut d = d.clone();
    let stall = deps.config.stall_secs as i64;
    if d.counts.outstanding() > 0 && age_secs(&d.updated_at) >= stall {
        let mut expired = 0;
        let mut pending = 0;
        let (mut sent, mut failed, mut unknown) = (0, 0, 0);
        let mut newest_change = i64::MAX;
        // A page at a time: the records are looked at, not kept.
        let mut pages = Pages::new(d.shards);
        while let Some((shard, after)) = pages.next_query() {
            let page = deps
                .store
                .query_shard(&d.id, shard, None, after, 1000)
                .await?;
            pages.reached(page.next.clone());
            for (key, r) in &page.recipients {
                newest_change = newest_change.min(age_secs(&r.updated_at));
                match r.state {
                    RecipientState::Sending => {
                        let claimed = r.claimed_at.as_deref().map(age_secs).unwrap_or(i64::MAX);
                        if claimed >= deps.config.claim_expiry_secs as i64 {
                            let reason = format!(
                            "claimed at {} by a sender that recorded no result; the provider may have accepted the message, so it is not re-sent automatically",
                            r.claimed_at.as_deref().unwrap_or("an unknown time")
                        );
                            if deps.store.record_unknown(&d.id, key, &reason).await? {
                                expired += 1;
                                unknown += 1;
                            }
                        }
                    }
                    RecipientState::Pending => pending += 1,
                    RecipientState::Sent => sent += 1,
                    RecipientState::Failed => failed += 1,
                    RecipientState::Unknown => unknown += 1,
                    RecipientState::Invalid
                    | RecipientState::Rejected
                    | RecipientState::Excluded => {}
                }
            }
        }
        if expired > 0 {
            // Counted by the one who moved the records, like every other result.
            d = deps.store.add_results(&d.id, 0, 0, expired).await?;
            report.expired_claims.push((d.id.clone(), expired));
        }
        // A sender adds to the counters right after writing a record (within the SDK's
        // operation timeout). Recounting while records still change could count a result
        // whose addition is on its way; so only a dispatch quiet in its records too.
        // The records read above are the count: nothing moved them since, or the dispatch
        // would not be quiet.
        if newest_change >= stall && d.counts.outstanding() > 0 {
            d = deps.store.set_results(&d.id, sent, failed, unknown).await?;
            report.recounted.push(d.id.clone());
            if pending > 0 {
                // Pending recipients of a quiet dispatch have no message on the way any more.
                hand_out(deps, &d).await?;
                report.fanned_out_again.push(d.id.clone());
            }
        }
    }
    if let Some(done) = deps.completer.complete_if_done(&d).await? {
        deps.notifier
            .notify(
                domain::notice::Event::Completed,
                &done,
                done.completion.as_deref(),
            )
            .await;
        report.completed.push(d.id.clone());
    }
    Ok(())
}
