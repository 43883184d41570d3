//! Resume: runs on a schedule and moves along what an interrupted step left behind.
//!
//! The scheduled run only looks: it lists the dispatches in each state and hands every one
//! that needs work to its own message on the settle queue, which the same function reads
//! (one message per invocation), so that a large dispatch never holds up the others. What a
//! settle message does:
//! - A dispatch waiting for continuation whose `resume_at` has come goes back to sending, and
//!   its recipients not yet sent are handed to the senders again.
//! - A sending dispatch whose counters have not moved for a while is looked at record by
//!   record, a page at a time, continuing in a new message when the invocation's time runs
//!   short: a claim older than the claim expiry with no result (a sender that died after
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
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use domain::config::Config;
use domain::model::{age_secs, Dispatch, DispatchState, RecipientState};
use domain::queue::{FanOutAction, Settle, SettleWork, StallPass};
use domain::{Error, Result};
use engine::completion::Completer;
use engine::ports::Completion;
use serde::Serialize;

mod jobs;
mod print;

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

/// What one settle message did.
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
    /// Passes over a dispatch's records that go on in a new message.
    pub passes_continued: Vec<String>,
    /// Operators' jobs that finished, and those that go on in a new message.
    pub jobs_finished: Vec<String>,
    pub jobs_continued: Vec<String>,
}

/// What one scheduled run handed out: a settle message per dispatch that needs work.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Schedule {
    pub handed_out: Vec<Settle>,
}

/// What the function is invoked with: a batch from the settle queue, or the schedule's event.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Trigger {
    Settle(SqsEvent),
    Schedule(EventBridgeEvent<serde_json::Value>),
}

/// What an invocation answers: the schedule's hand-out, or the settle batch's failures.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Schedule(Schedule),
    Settle(SqsBatchResponse),
}

/// One invocation, by its trigger.
pub async fn on_event(
    deps: &Deps,
    event: Trigger,
    deadline: domain::Deadline,
) -> Result<Answer, Error> {
    match event {
        Trigger::Settle(batch) => settle(deps, batch, deadline).await.map(Answer::Settle),
        Trigger::Schedule(e) => handle(deps, e, deadline).await.map(Answer::Schedule),
    }
}

/// The work a listed dispatch needs now, if any.
pub fn work_for(d: &Dispatch, config: &Config) -> Option<SettleWork> {
    match d.state {
        DispatchState::Sending => (d.counts.outstanding() == 0
            || age_secs(&d.updated_at) >= config.stall_secs as i64)
            .then_some(SettleWork::Sending { pass: None }),
        DispatchState::WaitingForContinuation => d
            .resume_at
            .as_deref()
            .is_none_or(|t| age_secs(t) >= 0)
            .then_some(SettleWork::Continue),
        DispatchState::Approved => {
            (age_secs(&d.updated_at) >= REFAN_AFTER_SECS).then_some(SettleWork::FanOutAgain)
        }
        // A claim given back after the rejection leaves its recipient pending, so the
        // rejection is handed out again (only pending recipients change) until no claim can
        // come back any more.
        DispatchState::Rejected => (age_secs(&d.updated_at)
            <= config.claim_expiry_secs as i64 + REFAN_AFTER_SECS)
            .then_some(SettleWork::RejectAgain),
        DispatchState::Completed | DispatchState::CompletedWithErrors | DispatchState::Closed => {
            d.history_key.is_none().then_some(SettleWork::WriteHistory)
        }
        _ => None,
    }
}

/// The states whose dispatches a scheduled run looks at.
const LOOKED_AT: [DispatchState; 7] = [
    DispatchState::Sending,
    DispatchState::WaitingForContinuation,
    DispatchState::Approved,
    DispatchState::Rejected,
    DispatchState::Completed,
    DispatchState::CompletedWithErrors,
    DispatchState::Closed,
];

/// One scheduled run: hands each dispatch that needs work to its own settle message. It
/// reads only the dispatch items (at most [`PER_STATE`] per state) and the stale-history
/// marks, so it takes about the same time however large the dispatches are.
pub async fn handle(
    deps: &Deps,
    _event: EventBridgeEvent<serde_json::Value>,
    _deadline: domain::Deadline,
) -> Result<Schedule, Error> {
    let queue = settle_queue(deps)?;
    let mut out = Schedule::default();
    for state in LOOKED_AT {
        for d in deps.store.list_dispatches(Some(state), PER_STATE).await? {
            if let Some(work) = work_for(&d, &deps.config) {
                out.handed_out.push(Settle {
                    dispatch_id: d.id.clone(),
                    work,
                });
            }
        }
    }
    for (id, since) in deps.completer.stale_marks(PER_STATE).await? {
        out.handed_out.push(Settle {
            dispatch_id: id,
            work: SettleWork::RefreshHistory { since },
        });
    }
    sqs::send_settle(&deps.sqs, queue, &out.handed_out).await?;
    if !out.handed_out.is_empty() {
        tracing::info!(work = ?out.handed_out, "scheduled run handed out");
    }
    Ok(out)
}

/// Settle messages, one dispatch each. A message whose work failed is handed back to the
/// queue alone (and after the receive limit lands in the dead-letter queue).
pub async fn settle(
    deps: &Deps,
    event: SqsEvent,
    deadline: domain::Deadline,
) -> Result<SqsBatchResponse, Error> {
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let work = serde_json::from_str::<Settle>(record.body.as_deref().unwrap_or(""));
        let result = match &work {
            Ok(work) => settle_one(deps, work, deadline).await.map(|report| {
                if report != Report::default() {
                    tracing::info!(?report, "settled");
                }
            }),
            Err(e) => Err(Error::Malformed(format!("settle message: {e}"))),
        };
        if let Err(e) = result {
            tracing::error!(message_id = %id, error = %e, "settle failed");
            if let Ok(work) = &work {
                if sqs::receive_count(&record) >= deps.config.max_receives {
                    // The message goes to the dead-letter queue: its job ends, saying why,
                    // rather than staying queued in the portal.
                    jobs::give_up(deps, work, &e).await;
                }
            }
            failures.push(id);
        }
    }
    Ok(sqs::batch_response(failures))
}

/// The work of one settle message.
pub async fn settle_one(
    deps: &Deps,
    work: &Settle,
    deadline: domain::Deadline,
) -> Result<Report, Error> {
    let mut report = Report::default();
    let id = &work.dispatch_id;
    if let SettleWork::RefreshHistory { since } = &work.work {
        if deps.completer.refresh_history(id, since).await? {
            report.histories_refreshed.push(id.clone());
        }
        return Ok(report);
    }
    let Some(d) = deps.store.get_dispatch(id).await? else {
        return Ok(report);
    };
    match (&work.work, d.state) {
        (SettleWork::Sending { pass }, DispatchState::Sending) => {
            settle_sending(deps, &d, pass.clone(), deadline, &mut report).await?
        }
        (SettleWork::Continue, DispatchState::WaitingForContinuation) => {
            if d.resume_at.as_deref().is_some_and(|t| age_secs(t) < 0) {
                return Ok(report);
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
                // Should the hand-out fail, the dispatch is sending with recipients pending:
                // the stall check hands them out.
                Ok(_) => {
                    hand_out(deps, &d).await?;
                    report.continued.push(d.id.clone());
                }
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        (SettleWork::FanOutAgain, DispatchState::Approved) => {
            hand_out(deps, &d).await?;
            report.fanned_out_again.push(d.id.clone());
        }
        (SettleWork::RejectAgain, DispatchState::Rejected) => {
            sqs::fan_out_all(
                &deps.sqs,
                &deps.config.fanout_queue_url,
                &d,
                FanOutAction::Reject,
            )
            .await?;
            report.rejections_handed_out.push(d.id.clone());
        }
        (SettleWork::WriteHistory, state) if state.is_finished() && d.history_key.is_none() => {
            deps.completer.write_history(&d).await?;
            report.histories_written.push(d.id.clone());
        }
        (
            SettleWork::Job {
                job_id,
                shard,
                after,
            },
            _,
        ) => {
            jobs::run(
                deps,
                &d,
                job_id,
                (*shard, after.clone()),
                deadline,
                &mut report,
            )
            .await?
        }
        // The dispatch moved on since the work was handed out: nothing left to do.
        _ => {}
    }
    Ok(report)
}

/// Where a pass over a dispatch's shards has come: the shard and the sort key to continue
/// after.
pub(crate) struct Pages {
    pub(crate) shards: u32,
    pub(crate) shard: u32,
    pub(crate) after: Option<String>,
    /// Whether this invocation has read a page yet.
    pub(crate) paged: bool,
}

impl Pages {
    /// A pass over `shards` from `(shard, after)`, no page read yet.
    pub(crate) fn from(shards: u32, (shard, after): (u32, Option<String>)) -> Pages {
        Pages {
            shards,
            shard,
            after,
            paged: false,
        }
    }

    /// Whether the pass must go on in a new message: less than [`MARGIN`] is left and a page
    /// has been read, so that a pass moves on however little time its invocation has.
    pub(crate) fn out_of_time(&self, deadline: domain::Deadline) -> bool {
        self.paged && deadline.remaining() < MARGIN
    }

    /// The next page to ask for, `None` when every shard has been read.
    pub(crate) fn next_query(&self) -> Option<(u32, Option<String>)> {
        (self.shard < self.shards).then(|| (self.shard, self.after.clone()))
    }

    /// A page came back with `next`: the same shard goes on, or the next shard starts.
    pub(crate) fn reached(&mut self, next: Option<String>) {
        self.paged = true;
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
pub(crate) async fn hand_out(deps: &Deps, d: &Dispatch) -> Result<()> {
    sqs::fan_out_all(
        &deps.sqs,
        &deps.config.fanout_queue_url,
        d,
        FanOutAction::Send,
    )
    .await
}

/// Records read per page of a stall pass.
pub(crate) const PASS_PAGE: i32 = 1000;

async fn settle_sending(
    deps: &Deps,
    d: &Dispatch,
    pass: Option<StallPass>,
    deadline: domain::Deadline,
    report: &mut Report,
) -> Result<()> {
    let mut d = d.clone();
    let stall = deps.config.stall_secs as i64;
    let looking = pass.is_some() || age_secs(&d.updated_at) >= stall;
    if d.counts.outstanding() > 0 && looking {
        let mut p = pass.unwrap_or_else(|| StallPass {
            dispatch_updated_at: d.updated_at.clone(),
            newest_change: i64::MAX,
            ..StallPass::default()
        });
        // A page at a time: the records are looked at, not kept.
        let mut pages = Pages::from(d.shards, (p.shard, p.after.take()));
        while let Some((shard, after)) = pages.next_query() {
            if pages.out_of_time(deadline) {
                // Out of time: the pass goes on in a new message, where it came to.
                p.shard = pages.shard;
                p.after = pages.after.take();
                let work = Settle {
                    dispatch_id: d.id.clone(),
                    work: SettleWork::Sending { pass: Some(p) },
                };
                sqs::send_settle(&deps.sqs, settle_queue(deps)?, &[work]).await?;
                report.passes_continued.push(d.id.clone());
                return Ok(());
            }
            let page = deps
                .store
                .query_shard(&d.id, shard, None, after, PASS_PAGE)
                .await?;
            pages.reached(page.next.clone());
            for (key, r) in &page.recipients {
                p.newest_change = p.newest_change.min(age_secs(&r.updated_at));
                match r.state {
                    RecipientState::Sending => {
                        let claimed = r.claimed_at.as_deref().map(age_secs).unwrap_or(i64::MAX);
                        if claimed >= deps.config.claim_expiry_secs as i64 {
                            let reason = format!(
                            "claimed at {} by a sender that recorded no result; the provider may have accepted the message, so it is not re-sent automatically",
                            r.claimed_at.as_deref().unwrap_or("an unknown time")
                        );
                            if deps.store.record_unknown(&d.id, key, &reason).await? {
                                p.expired += 1;
                                p.unknown += 1;
                            }
                        }
                    }
                    RecipientState::Pending => p.pending += 1,
                    RecipientState::Sent => p.sent += 1,
                    RecipientState::Created => p.created += 1,
                    RecipientState::Failed => p.failed += 1,
                    RecipientState::Unknown => p.unknown += 1,
                    RecipientState::Invalid
                    | RecipientState::Rejected
                    | RecipientState::Excluded => {}
                }
            }
        }
        // A sender adds to the counters right after writing a record (within the SDK's
        // operation timeout). Recounting while records still change could count a result
        // whose addition is on its way; so only a dispatch quiet in its records, and whose
        // counters did not move while the pass read them (it may have taken several
        // invocations).
        let now = deps
            .store
            .get_dispatch(&d.id)
            .await?
            .ok_or_else(|| Error::NotFound(d.id.clone()))?;
        let quiet = p.newest_change >= stall && now.updated_at == p.dispatch_updated_at;
        d = now;
        if p.expired > 0 {
            // Counted by the one who moved the records, like every other result.
            d = deps.store.add_results(&d.id, 0, 0, p.expired).await?;
            report.expired_claims.push((d.id.clone(), p.expired));
        }
        if quiet && d.state == DispatchState::Sending && d.counts.outstanding() > 0 {
            d = deps
                .store
                .set_results(&d.id, [p.sent, p.created, p.failed, p.unknown])
                .await?;
            report.recounted.push(d.id.clone());
            if p.pending > 0 {
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
        if done.counts.created > 0 {
            start_print(deps, &done).await;
        }
    }
    Ok(())
}

/// Starts the first build of the print files of a dispatch whose letters are all produced.
/// Should this fail, an operator builds them (`POST /dispatches/{id}/print`).
async fn start_print(deps: &Deps, d: &Dispatch) {
    let started = async {
        let manifest = deps.docs.package(&d.id).await?.manifest;
        adapters::print::start(
            &deps.store,
            &deps.sqs,
            settle_queue(deps)?,
            d,
            &manifest,
            "system",
        )
        .await
    };
    match started.await {
        Ok(Ok((job, _))) => {
            tracing::info!(dispatch = %d.id, job = %job.id, "print files being built")
        }
        Ok(Err(why)) => tracing::info!(dispatch = %d.id, why = %why, "print files not built"),
        Err(e) => tracing::error!(dispatch = %d.id, error = %e, "print files not started"),
    }
}

pub(crate) fn settle_queue(deps: &Deps) -> Result<&str> {
    deps.config.settle_queue_url.as_deref().ok_or_else(|| {
        Error::Malformed(format!(
            "{} is not set",
            domain::config::vars::SETTLE_QUEUE_URL
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::config::vars;

    fn config() -> Config {
        Config::from_lookup(&|k| {
            [
                (vars::TABLE_NAME, "t"),
                (vars::UPLOADS_BUCKET, "u"),
                (vars::REPORTS_BUCKET, "r"),
                (vars::FANOUT_QUEUE_URL, "f"),
                (vars::SEND_QUEUE_URL, "s"),
                (vars::STALL_SECS, "120"),
            ]
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
        })
        .expect("configuration")
    }

    fn dispatch(state: DispatchState, changed_secs_ago: i64) -> Dispatch {
        let mut d = Dispatch::arrived("d", "incoming/d/", 4);
        d.state = state;
        d.updated_at = (time::OffsetDateTime::now_utc()
            - time::Duration::seconds(changed_secs_ago))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
        d
    }

    #[test]
    fn only_dispatches_that_need_work_are_handed_out() {
        let c = config();
        // Sending with recipients outstanding: only once the counters have been quiet.
        let mut busy = dispatch(DispatchState::Sending, 5);
        busy.counts.total = 10;
        busy.counts.valid = 10;
        assert_eq!(work_for(&busy, &c), None);
        let mut quiet = busy.clone();
        quiet.updated_at = dispatch(DispatchState::Sending, 600).updated_at;
        assert_eq!(
            work_for(&quiet, &c),
            Some(SettleWork::Sending { pass: None })
        );
        // Nothing outstanding: completion, however recent the last change.
        let mut done = busy.clone();
        done.counts.sent = 10;
        assert_eq!(
            work_for(&done, &c),
            Some(SettleWork::Sending { pass: None })
        );
        // Waiting: when its time has come.
        let mut waiting = dispatch(DispatchState::WaitingForContinuation, 5);
        waiting.resume_at = Some(dispatch(DispatchState::Sending, -60).updated_at);
        assert_eq!(work_for(&waiting, &c), None);
        waiting.resume_at = Some(dispatch(DispatchState::Sending, 1).updated_at);
        assert_eq!(work_for(&waiting, &c), Some(SettleWork::Continue));
        // Approved and not picked up for a minute: fanned out again.
        assert_eq!(work_for(&dispatch(DispatchState::Approved, 5), &c), None);
        assert_eq!(
            work_for(&dispatch(DispatchState::Approved, 61), &c),
            Some(SettleWork::FanOutAgain)
        );
        // Rejected: for as long as a claim could still be given back.
        assert_eq!(
            work_for(&dispatch(DispatchState::Rejected, 5), &c),
            Some(SettleWork::RejectAgain)
        );
        assert_eq!(
            work_for(&dispatch(DispatchState::Rejected, 5_000), &c),
            None
        );
        // Finished: only without a history.
        let mut finished = dispatch(DispatchState::Completed, 5);
        assert_eq!(work_for(&finished, &c), Some(SettleWork::WriteHistory));
        finished.history_key = Some("h".into());
        assert_eq!(work_for(&finished, &c), None);
        assert_eq!(
            work_for(&dispatch(DispatchState::AwaitingApproval, 9_000), &c),
            None
        );
    }

    #[test]
    fn a_pass_continues_from_where_it_came_to() {
        let work = Settle {
            dispatch_id: "d".into(),
            work: SettleWork::Sending {
                pass: Some(StallPass {
                    shard: 3,
                    after: Some("R#3#k".into()),
                    dispatch_updated_at: "2026-12-03T08:00:00Z".into(),
                    sent: 7,
                    newest_change: 200,
                    ..StallPass::default()
                }),
            },
        };
        let body = serde_json::to_string(&work).unwrap();
        assert!(body.contains(r#""work":"sending""#), "{body}");
        assert_eq!(serde_json::from_str::<Settle>(&body).unwrap(), work);
        // The trigger tells a settle batch from the schedule's event.
        let batch: Trigger = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../events/sqs-settle.json"
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(batch, Trigger::Settle(_)), "{batch:?}");
        let schedule: Trigger = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../events/eventbridge-schedule.json"
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(schedule, Trigger::Schedule(_)), "{schedule:?}");
    }
}
