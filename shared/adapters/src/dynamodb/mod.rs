//! DynamoDB store: one table, dispatches and recipients.
//!
//! | item       | pk                         | sk              | indexes                                  |
//! |------------|----------------------------|-----------------|------------------------------------------|
//! | dispatch   | `D#<id>`                   | `DISPATCH`      | by-created (`gsi1`), by-state (`gsi2`)   |
//! | recipient  | `D#<id>#S#<shard>`         | `R#<recipient id>` or `L#<line>` | none                    |
//! | job        | `D#<id>#JOBS`              | `JOB#<job id>`  | none                                     |
//!
//! Recipients are spread over key shards (a hash of the recipient id) so that one dispatch
//! is not held to the write rate of a single partition. A row without a usable unique id is
//! keyed by its line so that it is still recorded.

pub mod amend;
pub mod audit;
pub mod claims;
pub mod counters;
pub mod dispatches;
pub mod followup;
pub mod jobs;
pub mod print;
pub mod rates;
pub mod receipts;
pub mod recipients;
pub mod signing;

pub use recipients::Page;

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

/// Whether the service refused a request with this error code.
pub(crate) fn has_code<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>, code: &str) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == code)
}

pub(crate) fn is_conditional_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    has_code(e, "ConditionalCheckFailedException")
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

    /// Writes requests 25 to a BatchWriteItem, `WRITE_CONCURRENCY` calls at a time.
    pub(crate) async fn write_all(&self, mut requests: Vec<WriteRequest>) -> Result<()> {
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

    /// One BatchWriteItem of at most 25 requests, retrying what the service leaves
    /// unprocessed a bounded number of times.
    pub(crate) async fn write_requests(&self, mut requests: Vec<WriteRequest>) -> Result<()> {
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
}

#[cfg(test)]
mod tests;
