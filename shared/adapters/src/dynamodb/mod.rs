//! DynamoDB store: one table, dispatches and recipients.
//!
//! | item       | pk                         | sk              | indexes                                  |
//! |------------|----------------------------|-----------------|------------------------------------------|
//! | dispatch   | `D#<id>`                   | `DISPATCH`      | by-created (`gsi1`), by-state (`gsi2`)   |
//! | recipient  | `D#<id>#S#<shard>`         | `R#<recipient id>` or `L#<line>` | none                    |
//!
//! Recipients are spread over key shards (a hash of the recipient id) so that one dispatch
//! is not held to the write rate of a single partition. A row without a usable unique id is
//! keyed by its line so that it is still recorded.

pub mod amend;
pub mod audit;
pub mod claims;
pub mod rates;
pub mod receipts;

use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, ReturnValue, Select, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use domain::error::{Error, Result};
use domain::keys::RecipientKey;
use domain::model::{
    now_rfc3339, Channel, Counts, Dispatch, DispatchState, Receipt, Recipient, RecipientState,
};
use futures::{stream, FutureExt, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub(crate) type Item = HashMap<String, AttributeValue>;

pub const INDEX_BY_CREATED: &str = "by-created";
pub const INDEX_BY_STATE: &str = "by-state";
pub(crate) const DISPATCH_SK: &str = "DISPATCH";
const ALL_DISPATCHES: &str = "DISPATCHES";
/// Calls of a batch operation while the service leaves items unprocessed.
pub(crate) const UNPROCESSED_ATTEMPTS: u32 = 8;

/// The wait after the `attempt`th call (from 0) left items unprocessed: 50 ms doubling, at
/// most 2 s.
pub(crate) fn unprocessed_wait(attempt: u32) -> Duration {
    (Duration::from_millis(50) * 2u32.pow(attempt.min(6))).min(Duration::from_secs(2))
}

/// Keys of one BatchGetItem call: the service's limit.
const MAX_BATCH_GET: usize = 100;

/// BatchWriteItem calls in flight at once while storing a list.
const WRITE_CONCURRENCY: usize = 8;

pub(crate) fn dispatch_pk(id: &str) -> String {
    format!("D#{id}")
}

pub(crate) fn shard_pk(id: &str, shard: u32) -> String {
    format!("D#{id}#S#{shard:03}")
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A list-of-strings attribute.
pub fn list(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|x| s(x.clone())).collect())
}

pub(crate) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn req_s(item: &Item, k: &str) -> Result<String> {
    get_s(item, k).ok_or_else(|| Error::Malformed(format!("item has no string '{k}'")))
}

pub(crate) fn get_n(item: &Item, k: &str) -> u64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn opt(item: &mut Item, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        item.insert(k.to_string(), s(v.clone()));
    }
}

fn dispatch_item(d: &Dispatch) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(dispatch_pk(&d.id))),
        ("sk".into(), s(DISPATCH_SK)),
        ("gsi1pk".into(), s(ALL_DISPATCHES)),
        ("gsi1sk".into(), s(format!("{}#{}", d.created_at, d.id))),
        ("gsi2pk".into(), s(d.state.as_str())),
        ("gsi2sk".into(), s(format!("{}#{}", d.updated_at, d.id))),
        ("id".into(), s(&d.id)),
        ("title".into(), s(&d.title)),
        ("state".into(), s(d.state.as_str())),
        ("created_at".into(), s(&d.created_at)),
        ("updated_at".into(), s(&d.updated_at)),
        ("total".into(), n(d.counts.total)),
        ("valid".into(), n(d.counts.valid)),
        ("invalid".into(), n(d.counts.invalid)),
        ("sent".into(), n(d.counts.sent)),
        ("failed".into(), n(d.counts.failed)),
        ("unknown".into(), n(d.counts.unknown)),
        ("stuck".into(), n(d.counts.stuck)),
        ("excluded".into(), n(d.counts.excluded)),
        ("source_prefix".into(), s(&d.source_prefix)),
        ("shards".into(), n(d.shards as u64)),
    ]);
    if !d.problems.is_empty() {
        item.insert("problems".into(), list(&d.problems));
    }
    opt(&mut item, "report_key", &d.report_key);
    opt(&mut item, "sample_key", &d.sample_key);
    opt(&mut item, "package_key", &d.package_key);
    opt(&mut item, "history_key", &d.history_key);
    opt(&mut item, "archived_by", &d.archived_by);
    opt(&mut item, "archived_at", &d.archived_at);
    opt(&mut item, "cancelled_by", &d.cancelled_by);
    opt(&mut item, "cancelled_at", &d.cancelled_at);
    opt(&mut item, "list_sha256", &d.list_sha256);
    opt(&mut item, "template_sha256", &d.template_sha256);
    opt(&mut item, "started_by", &d.started_by);
    opt(&mut item, "started_at", &d.started_at);
    opt(&mut item, "forwarded_to", &d.forwarded_to);
    opt(&mut item, "forwarded_by", &d.forwarded_by);
    opt(&mut item, "approved_by", &d.approved_by);
    opt(&mut item, "approved_at", &d.approved_at);
    opt(&mut item, "rejected_by", &d.rejected_by);
    opt(&mut item, "rejected_at", &d.rejected_at);
    opt(&mut item, "completed_at", &d.completed_at);
    opt(&mut item, "resume_at", &d.resume_at);
    opt(&mut item, "pause_reason", &d.pause_reason);
    opt(&mut item, "completion", &d.completion);
    opt(&mut item, "closed_by", &d.closed_by);
    opt(&mut item, "closed_at", &d.closed_at);
    opt(&mut item, "uploaded_at", &d.uploaded_at);
    item.insert("attempt".into(), n(u64::from(d.attempt)));
    item.insert("send_attempt".into(), n(u64::from(d.send_attempt)));
    if !d.attempts.is_empty() {
        item.insert("attempts".into(), attempts_value(&d.attempts));
    }
    item
}

/// Earlier attempts, stored as one JSON document.
pub fn attempts_value(attempts: &[domain::model::Attempt]) -> AttributeValue {
    s(serde_json::to_string(attempts).unwrap_or_else(|_| "[]".into()))
}

fn dispatch_from(item: &Item) -> Result<Dispatch> {
    let state = req_s(item, "state")?;
    Ok(Dispatch {
        id: req_s(item, "id")?,
        title: req_s(item, "title")?,
        state: state.parse().map_err(Error::Malformed)?,
        created_at: req_s(item, "created_at")?,
        updated_at: req_s(item, "updated_at")?,
        counts: Counts {
            total: get_n(item, "total"),
            valid: get_n(item, "valid"),
            invalid: get_n(item, "invalid"),
            sent: get_n(item, "sent"),
            failed: get_n(item, "failed"),
            unknown: get_n(item, "unknown"),
            stuck: get_n(item, "stuck"),
            excluded: get_n(item, "excluded"),
        },
        problems: item
            .get("problems")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        source_prefix: get_s(item, "source_prefix").unwrap_or_default(),
        shards: get_n(item, "shards").max(1) as u32,
        report_key: get_s(item, "report_key"),
        sample_key: get_s(item, "sample_key"),
        package_key: get_s(item, "package_key"),
        history_key: get_s(item, "history_key"),
        archived_by: get_s(item, "archived_by"),
        archived_at: get_s(item, "archived_at"),
        cancelled_by: get_s(item, "cancelled_by"),
        cancelled_at: get_s(item, "cancelled_at"),
        list_sha256: get_s(item, "list_sha256"),
        template_sha256: get_s(item, "template_sha256"),
        started_by: get_s(item, "started_by"),
        started_at: get_s(item, "started_at"),
        forwarded_to: get_s(item, "forwarded_to"),
        forwarded_by: get_s(item, "forwarded_by"),
        approved_by: get_s(item, "approved_by"),
        approved_at: get_s(item, "approved_at"),
        rejected_by: get_s(item, "rejected_by"),
        rejected_at: get_s(item, "rejected_at"),
        completed_at: get_s(item, "completed_at"),
        resume_at: get_s(item, "resume_at"),
        pause_reason: get_s(item, "pause_reason"),
        completion: get_s(item, "completion"),
        closed_by: get_s(item, "closed_by"),
        closed_at: get_s(item, "closed_at"),
        attempt: get_n(item, "attempt").max(1) as u32,
        send_attempt: get_n(item, "send_attempt").max(1) as u32,
        uploaded_at: get_s(item, "uploaded_at"),
        attempts: get_s(item, "attempts")
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| Error::Malformed(format!("attempts: {e}")))?
            .unwrap_or_default(),
    })
}

fn recipient_item(r: &Recipient, key: &RecipientKey) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(shard_pk(&r.dispatch_id, key.shard))),
        ("sk".into(), s(key.sk.clone())),
        ("dispatch_id".into(), s(&r.dispatch_id)),
        ("rid".into(), s(&r.recipient_id)),
        ("line".into(), n(r.line)),
        ("state".into(), s(r.state.as_str())),
        ("updated_at".into(), s(&r.updated_at)),
    ]);
    if let Some(c) = r.channel {
        item.insert("channel".into(), s(c.as_str()));
    }
    opt(&mut item, "address", &r.address);
    opt(&mut item, "reason", &r.reason);
    opt(&mut item, "message_id", &r.message_id);
    opt(&mut item, "sent_at", &r.sent_at);
    opt(&mut item, "claimed_at", &r.claimed_at);
    if let Some(receipt) = r.receipt {
        item.insert("receipt".into(), s(receipt.as_str()));
        item.insert("receipt_rank".into(), n(receipt.rank()));
    }
    opt(&mut item, "receipt_at", &r.receipt_at);
    opt(&mut item, "receipt_detail", &r.receipt_detail);
    if r.send_attempt > 1 {
        item.insert("send_attempt".into(), n(u64::from(r.send_attempt)));
    }
    opt(&mut item, "previous_reason", &r.previous_reason);
    if !r.fields.is_empty() {
        item.insert(
            "fields".into(),
            AttributeValue::M(
                r.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v.clone())))
                    .collect(),
            ),
        );
    }
    item
}

pub(crate) fn recipient_from(item: &Item) -> Result<(RecipientKey, Recipient)> {
    let pk = req_s(item, "pk")?;
    let shard = pk
        .rsplit_once("#S#")
        .and_then(|(_, s)| s.parse().ok())
        .ok_or_else(|| Error::Malformed(format!("recipient key '{pk}' has no shard")))?;
    let key = RecipientKey {
        shard,
        sk: req_s(item, "sk")?,
    };
    let fields: BTreeMap<String, String> = item
        .get("fields")
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let r = Recipient {
        dispatch_id: req_s(item, "dispatch_id")?,
        recipient_id: get_s(item, "rid").unwrap_or_default(),
        line: get_n(item, "line"),
        channel: get_s(item, "channel")
            .map(|c| c.parse::<Channel>())
            .transpose()
            .map_err(Error::Malformed)?,
        address: get_s(item, "address"),
        fields,
        state: req_s(item, "state")?.parse().map_err(Error::Malformed)?,
        reason: get_s(item, "reason"),
        message_id: get_s(item, "message_id"),
        sent_at: get_s(item, "sent_at"),
        claimed_at: get_s(item, "claimed_at"),
        updated_at: get_s(item, "updated_at").unwrap_or_default(),
        receipt: get_s(item, "receipt")
            .map(|v| v.parse::<Receipt>())
            .transpose()
            .map_err(Error::Malformed)?,
        receipt_at: get_s(item, "receipt_at"),
        receipt_detail: get_s(item, "receipt_detail"),
        send_attempt: get_n(item, "send_attempt").max(1) as u32,
        previous_reason: get_s(item, "previous_reason"),
    };
    Ok((key, r))
}

pub(crate) fn is_conditional_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// A page of a shard.
#[derive(Debug, Default)]
pub struct Page {
    pub recipients: Vec<(RecipientKey, Recipient)>,
    /// Sort key to continue after, when there is more.
    pub next: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl Store {
    /// The store the configuration names.
    pub fn from_config(
        clients: &crate::clients::Clients,
        config: &domain::config::Config,
    ) -> Store {
        Store::new(clients.dynamodb.clone(), &config.table_name)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Store {
        Store {
            client,
            table: table.into(),
        }
    }

    /// Creates a dispatch; a conflict when one with the same id exists.
    pub async fn create_dispatch(&self, d: &Dispatch) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(dispatch_item(d)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| {
                if is_conditional_failure(&e) {
                    Error::Conflict(format!("dispatch '{}' exists already", d.id))
                } else {
                    Error::aws("PutItem")(e)
                }
            })?;
        Ok(())
    }

    pub async fn get_dispatch(&self, id: &str) -> Result<Option<Dispatch>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(id)))
            .key("sk", s(DISPATCH_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem"))?;
        out.item.as_ref().map(dispatch_from).transpose()
    }

    /// Dispatches, newest first; only those in `state` when given.
    pub async fn list_dispatches(
        &self,
        state: Option<DispatchState>,
        limit: i32,
    ) -> Result<Vec<Dispatch>> {
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .scan_index_forward(false)
            .limit(limit);
        let q = match state {
            Some(st) => q
                .index_name(INDEX_BY_STATE)
                .key_condition_expression("gsi2pk = :p")
                .expression_attribute_values(":p", s(st.as_str())),
            None => q
                .index_name(INDEX_BY_CREATED)
                .key_condition_expression("gsi1pk = :p")
                .expression_attribute_values(":p", s(ALL_DISPATCHES)),
        };
        let out = q.send().await.map_err(Error::aws("Query"))?;
        out.items().iter().map(dispatch_from).collect()
    }

    /// Every dispatch in one of `states` (all of them when `states` is empty), read page by
    /// page from the index. Dispatches are few (one per mailing), so the API filters, sorts
    /// and pages this list itself.
    pub async fn all_dispatches(&self, states: &[DispatchState]) -> Result<Vec<Dispatch>> {
        let queries: Vec<(&str, &str, &str)> = if states.is_empty() {
            vec![(INDEX_BY_CREATED, "gsi1pk", ALL_DISPATCHES)]
        } else {
            states
                .iter()
                .map(|st| (INDEX_BY_STATE, "gsi2pk", st.as_str()))
                .collect()
        };
        let mut out = Vec::new();
        for (index, key, value) in queries {
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(format!("{key} = :p"))
                .expression_attribute_values(":p", s(value))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(Error::aws("Query"))?;
                for item in page.items() {
                    out.push(dispatch_from(item)?);
                }
            }
        }
        Ok(out)
    }

    /// Moves a dispatch from `from` to `to`, setting `extra` attributes too. Enforced by a
    /// conditional write: a conflict when the dispatch is no longer in `from`.
    pub async fn transition(
        &self,
        id: &str,
        from: DispatchState,
        to: DispatchState,
        extra: &[(&str, AttributeValue)],
    ) -> Result<Dispatch> {
        self.transition_if_unchanged(id, from, to, extra, &[]).await
    }

    /// A transition that happens only while the attributes in `unchanged` still have these
    /// values (e.g. an approval of the package the approver saw).
    pub async fn transition_if_unchanged(
        &self,
        id: &str,
        from: DispatchState,
        to: DispatchState,
        extra: &[(&str, AttributeValue)],
        unchanged: &[(&str, AttributeValue)],
    ) -> Result<Dispatch> {
        if !from.can_become(to) {
            return Err(Error::Conflict(format!(
                "a dispatch cannot go from {from} to {to}"
            )));
        }
        self.write_in_state(id, from, to, extra, unchanged).await
    }

    /// Sets attributes of a dispatch that must still be in `state` (e.g. who an approval
    /// is forwarded to, while it awaits approval).
    pub async fn set_in_state(
        &self,
        id: &str,
        state: DispatchState,
        extra: &[(&str, AttributeValue)],
    ) -> Result<Dispatch> {
        self.write_in_state(id, state, state, extra, &[]).await
    }

    async fn write_in_state(
        &self,
        id: &str,
        from: DispatchState,
        to: DispatchState,
        extra: &[(&str, AttributeValue)],
        unchanged: &[(&str, AttributeValue)],
    ) -> Result<Dispatch> {
        let now = now_rfc3339();
        let mut expr =
            String::from("SET #state = :to, updated_at = :now, gsi2pk = :to, gsi2sk = :gsi2sk");
        let mut names = HashMap::from([("#state".to_string(), "state".to_string())]);
        let mut values = HashMap::from([
            (":to".to_string(), s(to.as_str())),
            (":from".to_string(), s(from.as_str())),
            (":now".to_string(), s(now.clone())),
            (":gsi2sk".to_string(), s(format!("{now}#{id}"))),
        ]);
        for (i, (k, v)) in extra.iter().enumerate() {
            expr.push_str(&format!(", #x{i} = :x{i}"));
            names.insert(format!("#x{i}"), k.to_string());
            values.insert(format!(":x{i}"), v.clone());
        }
        let mut condition = String::from("#state = :from");
        for (i, (k, v)) in unchanged.iter().enumerate() {
            condition.push_str(&format!(" AND #c{i} = :c{i}"));
            names.insert(format!("#c{i}"), k.to_string());
            values.insert(format!(":c{i}"), v.clone());
        }
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(id)))
            .key("sk", s(DISPATCH_SK))
            .update_expression(expr)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| {
                if is_conditional_failure(&e) {
                    Error::Conflict(if unchanged.is_empty() {
                        format!("dispatch '{id}' is not {from}")
                    } else {
                        format!("dispatch '{id}' is not {from}, or it changed meanwhile")
                    })
                } else {
                    Error::aws("UpdateItem")(e)
                }
            })?;
        out.attributes
            .as_ref()
            .map(dispatch_from)
            .transpose()?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Sets plain attributes of an existing dispatch (document keys, counts of validation).
    pub async fn update_dispatch(&self, id: &str, set: &[(&str, AttributeValue)]) -> Result<()> {
        let mut expr = String::from("SET updated_at = :now");
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":now".to_string(), s(now_rfc3339()))]);
        for (i, (k, v)) in set.iter().enumerate() {
            expr.push_str(&format!(", #x{i} = :x{i}"));
            names.insert(format!("#x{i}"), k.to_string());
            values.insert(format!(":x{i}"), v.clone());
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(id)))
            .key("sk", s(DISPATCH_SK))
            .update_expression(expr)
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|e| {
                if is_conditional_failure(&e) {
                    Error::NotFound(id.to_string())
                } else {
                    Error::aws("UpdateItem")(e)
                }
            })?;
        Ok(())
    }

    /// Adds send results to the dispatch's counters and returns the dispatch after.
    pub async fn add_results(
        &self,
        id: &str,
        sent: u64,
        failed: u64,
        unknown: u64,
    ) -> Result<Dispatch> {
        // One attempt: a retried ADD whose first attempt was applied would count twice. A lost
        // addition only under-counts, which the recount of a quiet dispatch mends.
        self.write_results(
            id,
            "ADD #sent :s, #failed :f, #unknown :u SET updated_at = :now",
            1,
            [sent, failed, unknown],
        )
        .await
    }

    fn update_recipient(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(shard_pk(dispatch_id, key.shard)))
            .key("sk", s(key.sk.clone()))
    }

    /// Marks pending recipients whose queue message went to the dead-letter queue, so that
    /// they are not handed out again by themselves, and counts those newly marked on the
    /// dispatch. Returns how many were newly marked.
    pub async fn mark_stuck(&self, id: &str, keys: &[RecipientKey]) -> Result<u64> {
        let mut marked = 0;
        for key in keys {
            let res = self
                .update_recipient(id, key)
                .update_expression("SET stuck_at = :now, updated_at = :now")
                .condition_expression("#state = :pending AND attribute_not_exists(stuck_at)")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
                .expression_attribute_values(":now", s(now_rfc3339()))
                .send()
                .await;
            match res {
                Ok(_) => marked += 1,
                Err(e) if is_conditional_failure(&e) => {}
                Err(e) => return Err(Error::aws("UpdateItem")(e)),
            }
        }
        if marked > 0 {
            self.add_stuck(id, marked).await?;
        }
        Ok(marked)
    }

    /// Counts recipients whose queue message went to the dead-letter queue.
    async fn add_stuck(&self, id: &str, recipients: u64) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(id)))
            .key("sk", s(DISPATCH_SK))
            .update_expression("ADD stuck :n SET updated_at = :now")
            .expression_attribute_values(":n", n(recipients))
            .expression_attribute_values(":now", s(now_rfc3339()))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await
            .map_err(Error::aws("UpdateItem"))?;
        Ok(())
    }

    /// Sets the result counters to values counted from the records.
    pub async fn set_results(
        &self,
        id: &str,
        sent: u64,
        failed: u64,
        unknown: u64,
    ) -> Result<Dispatch> {
        self.write_results(
            id,
            "SET #sent = :s, #failed = :f, #unknown = :u, updated_at = :now",
            3,
            [sent, failed, unknown],
        )
        .await
    }

    async fn write_results(
        &self,
        id: &str,
        expr: &str,
        attempts: u32,
        [sent, failed, unknown]: [u64; 3],
    ) -> Result<Dispatch> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(id)))
            .key("sk", s(DISPATCH_SK))
            .update_expression(expr)
            .expression_attribute_names("#sent", "sent")
            .expression_attribute_names("#failed", "failed")
            .expression_attribute_names("#unknown", "unknown")
            .expression_attribute_values(":s", n(sent))
            .expression_attribute_values(":f", n(failed))
            .expression_attribute_values(":u", n(unknown))
            .expression_attribute_values(":now", s(now_rfc3339()))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllNew)
            .customize()
            .config_override(aws_sdk_dynamodb::config::Builder::default().retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(attempts),
            ))
            .send()
            .await
            .map_err(Error::aws("UpdateItem"))?;
        out.attributes
            .as_ref()
            .map(dispatch_from)
            .transpose()?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Stores recipients with batched writes, a bounded number in flight.
    pub async fn put_recipients(&self, batch: &[(RecipientKey, Recipient)]) -> Result<()> {
        let requests: Vec<WriteRequest> = batch
            .iter()
            .map(|(k, r)| {
                PutRequest::builder()
                    .set_item(Some(recipient_item(r, k)))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|e| Error::Malformed(e.to_string()))
            })
            .collect::<Result<_>>()?;
        self.write_all(requests).await
    }

    /// Writes requests 25 to a BatchWriteItem, `WRITE_CONCURRENCY` calls at a time.
    async fn write_all(&self, mut requests: Vec<WriteRequest>) -> Result<()> {
        let mut chunks = Vec::with_capacity(requests.len().div_ceil(25));
        while !requests.is_empty() {
            let rest = requests.split_off(requests.len().min(25));
            chunks.push(std::mem::replace(&mut requests, rest));
        }
        stream::iter(chunks)
            .map(|c| self.write_requests(c).boxed())
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Deletes every recipient record of a dispatch (before a repeated validation writes
    /// the corrected list's). Returns how many were deleted.
    pub async fn delete_recipients(&self, dispatch_id: &str, shards: u32) -> Result<u64> {
        let mut deleted = 0;
        for shard in 0..shards {
            let pk = shard_pk(dispatch_id, shard);
            let mut after: Option<Item> = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(pk.clone()))
                    .projection_expression("pk, sk")
                    .set_exclusive_start_key(after.take())
                    .limit(1000)
                    .send()
                    .await
                    .map_err(Error::aws("Query"))?;
                let keys: Vec<WriteRequest> = out
                    .items()
                    .iter()
                    .map(|k| {
                        DeleteRequest::builder()
                            .set_key(Some(k.clone()))
                            .build()
                            .map(|d| WriteRequest::builder().delete_request(d).build())
                            .map_err(|e| Error::Malformed(e.to_string()))
                    })
                    .collect::<Result<_>>()?;
                deleted += keys.len() as u64;
                self.write_all(keys).await?;
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => after = Some(k.clone()),
                    _ => break,
                }
            }
        }
        Ok(deleted)
    }

    /// One BatchWriteItem of at most 25 requests, retrying what the service leaves
    /// unprocessed a bounded number of times.
    async fn write_requests(&self, mut requests: Vec<WriteRequest>) -> Result<()> {
        for attempt in 0..UNPROCESSED_ATTEMPTS {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(Error::aws("BatchWriteItem"))?;
            requests = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(unprocessed_wait(attempt)).await;
        }
        Err(Error::Aws {
            op: "BatchWriteItem",
            source: format!("{} items stayed unprocessed", requests.len()).into(),
        })
    }

    /// One page of a shard, optionally only recipients in `state`.
    pub async fn query_shard(
        &self,
        dispatch_id: &str,
        shard: u32,
        state: Option<RecipientState>,
        after: Option<String>,
        limit: i32,
    ) -> Result<Page> {
        self.query_shard_filtered(dispatch_id, shard, state, after, limit, false)
            .await
    }

    /// Pending recipients to hand to the senders: those whose message went to the dead-letter
    /// queue wait for an operator instead.
    pub async fn query_sendable(
        &self,
        dispatch_id: &str,
        shard: u32,
        after: Option<String>,
        limit: i32,
    ) -> Result<Page> {
        self.query_shard_filtered(
            dispatch_id,
            shard,
            Some(RecipientState::Pending),
            after,
            limit,
            true,
        )
        .await
    }

    async fn query_shard_filtered(
        &self,
        dispatch_id: &str,
        shard: u32,
        state: Option<RecipientState>,
        after: Option<String>,
        limit: i32,
        sendable_only: bool,
    ) -> Result<Page> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(shard_pk(dispatch_id, shard)))
            .limit(limit)
            .select(Select::AllAttributes);
        if let Some(st) = state {
            q = q
                .filter_expression(if sendable_only {
                    "#state = :st AND attribute_not_exists(stuck_at)"
                } else {
                    "#state = :st"
                })
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":st", s(st.as_str()));
        }
        if let Some(sk) = after {
            q = q
                .exclusive_start_key("pk", s(shard_pk(dispatch_id, shard)))
                .exclusive_start_key("sk", s(sk));
        }
        let out = q.send().await.map_err(Error::aws("Query"))?;
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get("sk"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        let recipients = out
            .items()
            .iter()
            .map(recipient_from)
            .collect::<Result<_>>()?;
        Ok(Page { recipients, next })
    }

    /// Every recipient of a dispatch, in list order.
    pub async fn all_recipients(&self, dispatch_id: &str, shards: u32) -> Result<Vec<Recipient>> {
        Ok(self
            .all_recipients_keyed(dispatch_id, shards)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Every recipient of a dispatch with its storage key, in list order.
    pub async fn all_recipients_keyed(
        &self,
        dispatch_id: &str,
        shards: u32,
    ) -> Result<Vec<(RecipientKey, Recipient)>> {
        let per_shard = stream::iter(0..shards)
            .map(|shard| self.shard_recipients(dispatch_id, shard, None).boxed())
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let mut all: Vec<(RecipientKey, Recipient)> = per_shard.into_iter().flatten().collect();
        all.sort_by_key(|(_, r)| r.line);
        Ok(all)
    }

    /// The items of the given keys that exist, in no particular order: BatchGetItem, 100
    /// keys a call, repeating what the service leaves unprocessed.
    pub(crate) async fn batch_get(&self, keys: Vec<Item>, consistent: bool) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(consistent)
                    .build()
                    .map_err(|e| Error::Malformed(e.to_string()))?,
            );
            for attempt in 0..UNPROCESSED_ATTEMPTS {
                let Some(req) = request.take() else { break };
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(Error::aws("BatchGetItem"))?;
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    found.extend(items.iter().cloned());
                }
                request = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(unprocessed_wait(attempt)).await;
                }
            }
            if let Some(left) = request {
                return Err(Error::Aws {
                    op: "BatchGetItem",
                    source: format!("{} keys stayed unprocessed", left.keys().len()).into(),
                });
            }
        }
        Ok(found)
    }

    /// Every recipient of one shard, optionally only those in `state`, page by page.
    pub async fn shard_recipients(
        &self,
        dispatch_id: &str,
        shard: u32,
        state: Option<RecipientState>,
    ) -> Result<Vec<(RecipientKey, Recipient)>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .query_shard(dispatch_id, shard, state, after, 1000)
                .await?;
            out.extend(page.recipients);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    async fn set_recipient_state(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
        from: RecipientState,
        to: RecipientState,
        extra: &[(&str, String)],
    ) -> Result<bool> {
        if !from.can_become(to) {
            return Err(Error::Conflict(format!(
                "a recipient cannot go from {from} to {to}"
            )));
        }
        let mut expr = String::from("SET #state = :to, updated_at = :now");
        let mut names = HashMap::from([("#state".to_string(), "state".to_string())]);
        let mut values = HashMap::from([
            (":to".to_string(), s(to.as_str())),
            (":from".to_string(), s(from.as_str())),
            (":now".to_string(), s(now_rfc3339())),
        ]);
        for (i, (k, v)) in extra.iter().enumerate() {
            expr.push_str(&format!(", #x{i} = :x{i}"));
            names.insert(format!("#x{i}"), k.to_string());
            values.insert(format!(":x{i}"), s(v.clone()));
        }
        let res = self
            .update_recipient(dispatch_id, key)
            .update_expression(expr)
            .condition_expression("#state = :from")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("UpdateItem")(e)),
        }
    }

    /// Records that the provider call ended without an answer.
    pub async fn record_unknown(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
        reason: &str,
    ) -> Result<bool> {
        self.set_recipient_state(
            dispatch_id,
            key,
            RecipientState::Sending,
            RecipientState::Unknown,
            &[("reason", reason.to_string())],
        )
        .await
    }

    /// Marks a recipient that was not sent to as rejected with the dispatch (`how`:
    /// "rejected" or "cancelled").
    pub async fn reject_pending(
        &self,
        dispatch_id: &str,
        key: &RecipientKey,
        how: &str,
    ) -> Result<bool> {
        self.set_recipient_state(
            dispatch_id,
            key,
            RecipientState::Pending,
            RecipientState::Rejected,
            &[(
                "reason",
                format!("the dispatch was {how} before this recipient was sent to"),
            )],
        )
        .await
    }
}

fn text_stamps<'a>(stamps: &[(&'a str, String)]) -> Vec<(&'a str, AttributeValue)> {
    stamps.iter().map(|(k, v)| (*k, s(v.clone()))).collect()
}

#[async_trait::async_trait]
impl engine::ports::DispatchBook for Store {
    async fn dispatch(&self, id: &str) -> Result<Option<Dispatch>> {
        self.get_dispatch(id).await
    }

    async fn transition(
        &self,
        id: &str,
        from: DispatchState,
        to: DispatchState,
        stamps: &[(&str, String)],
    ) -> Result<Dispatch> {
        Store::transition(self, id, from, to, &text_stamps(stamps)).await
    }

    async fn stamp(&self, id: &str, stamps: &[(&str, String)]) -> Result<()> {
        self.update_dispatch(id, &text_stamps(stamps)).await
    }
}

#[async_trait::async_trait]
impl engine::ports::RecipientRoll for Store {
    async fn every_recipient(&self, d: &Dispatch) -> Result<Vec<(RecipientKey, Recipient)>> {
        self.all_recipients_keyed(&d.id, d.shards).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(id: &str, line: u64) -> Recipient {
        Recipient {
            channel: Some(Channel::Sms),
            address: Some("+4520123456".into()),
            fields: BTreeMap::from([("name".into(), "Bo".into())]),
            updated_at: "2026-01-01T00:00:00Z".into(),
            receipt: Some(Receipt::Delivered),
            receipt_at: Some("2026-01-01T00:00:09Z".into()),
            receipt_detail: Some("250 ok".into()),
            send_attempt: 2,
            previous_reason: Some("MessageRejected: refused".into()),
            ..Recipient::pending("d1", id, line)
        }
    }

    #[test]
    fn recipient_items_round_trip() {
        let r = recipient("7", 3);
        let k = domain::keys::recipient_key(&r, true, 16);
        let (k2, r2) = recipient_from(&recipient_item(&r, &k)).unwrap();
        assert_eq!((k2, r2), (k, r));
    }

    #[test]
    fn dispatch_items_round_trip() {
        let d = Dispatch {
            id: "winter".into(),
            title: "Winter".into(),
            state: DispatchState::AwaitingApproval,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:01Z".into(),
            counts: Counts {
                total: 3,
                valid: 2,
                invalid: 1,
                sent: 0,
                failed: 0,
                unknown: 0,
                stuck: 2,
                excluded: 4,
            },
            problems: vec!["x".into()],
            source_prefix: "incoming/winter/".into(),
            shards: 16,
            report_key: Some("r".into()),
            sample_key: None,
            package_key: Some("p".into()),
            history_key: None,
            archived_by: None,
            archived_at: None,
            cancelled_by: Some("ops-1".into()),
            cancelled_at: Some("2026-01-03T00:00:00Z".into()),
            list_sha256: Some("ab12".into()),
            template_sha256: Some("cd34".into()),
            started_by: Some("ops-1".into()),
            started_at: Some("2025-12-31T00:00:00Z".into()),
            forwarded_to: Some("boss-3".into()),
            forwarded_by: Some("ops-2".into()),
            approved_by: None,
            approved_at: None,
            rejected_by: None,
            rejected_at: None,
            completed_at: None,
            resume_at: Some("2026-01-01T00:01:00Z".into()),
            pause_reason: None,
            completion: Some("manual".into()),
            closed_by: Some("ops-2".into()),
            closed_at: Some("2026-01-02T00:00:00Z".into()),
            attempt: 2,
            uploaded_at: Some("2026-01-01T00:00:00.000Z".into()),
            attempts: vec![domain::model::Attempt {
                attempt: 1,
                state: DispatchState::ValidationFailed,
                uploaded_at: None,
                finished_at: "2025-12-31T00:00:00Z".into(),
                counts: Counts::default(),
                problems: vec!["the list has no 'email' column".into()],
                report_key: None,
                summary_key: Some("s".into()),
                sample_key: None,
            }],
            send_attempt: 3,
        };
        assert_eq!(dispatch_from(&dispatch_item(&d)).unwrap(), d);
    }
}
