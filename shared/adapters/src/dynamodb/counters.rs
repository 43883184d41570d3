//! A dispatch's result counters, spread over slots that senders do not share.
//!
//! Every result transaction adds to the counters. Were they on the dispatch's own item, every
//! sender of a dispatch would write that one item, and DynamoDB cancels a transaction that
//! touches an item another transaction is writing (`TransactionConflict`): with dozens of
//! senders the dispatch item would be a hot spot that most transactions collide on, and an
//! operator's plain write to it (a pause) would be refused with
//! `TransactionConflictException`. So each result transaction adds to one of
//! [`COUNTER_SLOTS`] counter items, chosen at random for each attempt, and a dispatch is read
//! as its own item's counts plus the sum of its slots.
//!
//! | item          | pk               | sk       | attributes                                   |
//! |---------------|------------------|----------|----------------------------------------------|
//! | counter slot  | `D#<id>#COUNTS`  | `C#<nn>` | `sent`, `failed`, `unknown`, `stuck`, `created` (added), `updated_at` |
//!
//! The dispatch item keeps what is written there directly: the counts of validation, a
//! recount (which sets the item's counts so that the sum is what was counted) and a resend
//! (which takes the resent recipients off its counts, so those may be negative there).

use super::*;
use std::hash::BuildHasher;

/// Counter items per dispatch: enough that a few dozen senders rarely pick the same one at
/// the same moment, few enough to be read in one small query.
pub const COUNTER_SLOTS: u32 = 32;

/// Attempts at a plain write refused with `TransactionConflictException`.
pub(crate) const CONFLICT_ATTEMPTS: u32 = 8;

pub(crate) fn counters_pk(id: &str) -> String {
    format!("D#{id}#COUNTS")
}

/// A slot chosen at random.
pub(crate) fn any_slot() -> u32 {
    (std::collections::hash_map::RandomState::new().hash_one(()) % u64::from(COUNTER_SLOTS)) as u32
}

/// The counters results add to, in this order.
pub(crate) const COUNTED: [&str; 5] = ["sent", "failed", "unknown", "stuck", "created"];

/// What an addition to a slot does.
const ADD_TO_SLOT: &str = "ADD #sent :sent, #failed :failed, #unknown :unknown, #stuck :stuck, #created :created SET updated_at = :now";

/// The names and values of an addition to a slot.
fn slot_addition(added: [u64; 5], now: &str) -> (HashMap<String, String>, Item) {
    let mut names = HashMap::new();
    let mut values = Item::from([(":now".to_string(), s(now))]);
    for (name, v) in COUNTED.iter().zip(added) {
        names.insert(format!("#{name}"), name.to_string());
        values.insert(format!(":{name}"), n(v));
    }
    (names, values)
}

fn slot_sk(slot: u32) -> AttributeValue {
    s(format!("C#{slot:02}"))
}

/// The sum of a dispatch's counter slots, and when one of them last changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tallies {
    pub added: [i64; 5],
    pub latest: Option<String>,
}

/// A signed number attribute.
pub(crate) fn signed(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_signed(item: &Item, k: &str) -> i64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether a dispatch in `state` may have results on its counter slots.
pub(crate) fn may_have_results(state: &str) -> bool {
    !matches!(
        state.parse::<DispatchState>(),
        Ok(DispatchState::AwaitingUpload
            | DispatchState::Validating
            | DispatchState::ValidationFailed
            | DispatchState::AwaitingApproval
            | DispatchState::Cancelled)
    )
}

/// Whether a plain write was refused because a transaction holds its item.
pub(crate) fn is_transaction_conflict<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    has_code(e, "TransactionConflictException")
}

/// A plain write, sent again (with backoff) while a transaction holds its item: DynamoDB
/// applied nothing of a write it refused so, and the SDK does not retry that refusal.
/// Writes of this process refused for a transaction conflict and sent again, since the
/// figures last took them.
static CONFLICTS_RETRIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one write sent again after a transaction conflict.
pub(crate) fn note_conflict_retried() {
    CONFLICTS_RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The writes sent again after a transaction conflict since the last call (the process's
/// figure: on Lambda, one invocation's).
pub fn take_conflicts_retried() -> u64 {
    CONFLICTS_RETRIED.swap(0, std::sync::atomic::Ordering::Relaxed)
}

pub(crate) async fn retrying_conflicts<T, E, R, F, Fut>(
    mut send: F,
) -> std::result::Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = std::result::Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    >,
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    let mut attempt = 0;
    loop {
        match send().await {
            Err(e) if is_transaction_conflict(&e) && attempt + 1 < CONFLICT_ATTEMPTS => {
                note_conflict_retried();
                tokio::time::sleep(engine::retry::backoff(attempt as usize)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Store {
    /// A transaction's addition to one counter slot of a dispatch.
    pub(crate) fn counter_update(
        &self,
        dispatch_id: &str,
        slot: u32,
        added: [u64; 5],
        now: &str,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        let (names, values) = slot_addition(added, now);
        aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .key("pk", s(counters_pk(dispatch_id)))
            .key("sk", slot_sk(slot))
            .update_expression(ADD_TO_SLOT)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
    }

    /// Adds to a dispatch's counters outside a transaction (claims that expired, stuck
    /// recipients). Sent once: a retried addition whose first attempt was applied would count
    /// twice, and a lost one only under-counts, which the recount of a quiet dispatch mends.
    /// A refusal because a transaction holds the slot applied nothing; another slot is tried.
    pub(crate) async fn add_to_counters(&self, dispatch_id: &str, added: [u64; 5]) -> Result<()> {
        let (names, values) = slot_addition(added, &now_rfc3339());
        // Each attempt on another slot.
        retrying_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(counters_pk(dispatch_id)))
                .key("sk", slot_sk(any_slot()))
                .update_expression(ADD_TO_SLOT)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::default().retry_config(
                        aws_config::retry::RetryConfig::standard().with_max_attempts(1),
                    ),
                )
                .send()
        })
        .await
        .map_err(Error::aws("UpdateItem"))?;
        Ok(())
    }

    /// The sum of a dispatch's counter slots (one strongly consistent query).
    pub(crate) async fn tallies(&self, dispatch_id: &str) -> Result<Tallies> {
        let mut t = Tallies::default();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(counters_pk(dispatch_id)))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Error::aws("Query"))?;
            for item in page.items() {
                for (sum, name) in t.added.iter_mut().zip(COUNTED) {
                    *sum += get_signed(item, name);
                }
                if let Some(at) = get_s(item, "updated_at") {
                    if t.latest.as_ref().is_none_or(|l| *l < at) {
                        t.latest = Some(at);
                    }
                }
            }
        }
        Ok(t)
    }

    /// The dispatch an item holds, with its counter slots added: its counts are the item's
    /// plus the slots', and it was last updated when the item or a slot last was.
    pub(crate) async fn dispatch_of(&self, item: &Item) -> Result<Dispatch> {
        let state = get_s(item, "state").unwrap_or_default();
        let tallies = if may_have_results(&state) {
            let id = req_s(item, "id")?;
            self.tallies(&id).await?
        } else {
            Tallies::default()
        };
        dispatches::dispatch_with(item, &tallies)
    }

    /// The dispatches of several items, a few at a time.
    pub(crate) fn dispatches_of<'a>(
        &'a self,
        items: &'a [Item],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Dispatch>>> {
        stream::iter(items)
            .map(move |item| self.dispatch_of(item).boxed())
            .buffered(8)
            .try_collect()
            .boxed()
    }
}
