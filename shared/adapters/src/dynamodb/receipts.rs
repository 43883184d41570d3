//! Receipts in DynamoDB: a recipient found by the provider's message id and its receipt
//! recorded, the suppression list, and the marks of histories that receipts made stale.
//!
//! - The event is matched to its recipient by the provider's message id through the table's
//!   `by-message` index (a query, never a scan) and recorded on the recipient
//!   ([`Store::record_receipt`]).
//! - Hard bounces, complaints and SMS opt-outs put the address on the suppression list
//!   ([`Store::suppress`]); validation leaves suppressed addresses out of later dispatches.
//! - A receipt for a dispatch that has already finished marks its history as stale; the
//!   scheduled function writes it again ([`Store::stale_histories`]).
//!
//! | item             | pk                     | sk                |
//! |------------------|------------------------|-------------------|
//! | suppressed entry | `SUPPRESSED#<address>` | `SUPPRESSED`      |
//! | stale history    | `HISTORY#STALE`        | `<dispatch id>`   |

use crate::dynamodb::{get_s, n, s, Item, Store};
use aws_sdk_dynamodb::types::AttributeValue;
use domain::error::{Error, Result};
use domain::keys::RecipientKey;
use domain::suppression::{suppression_key, Suppression};
use intake::events::Event;
use std::collections::HashMap;

/// The sparse index of recipients by the provider's message id.
pub const INDEX_BY_MESSAGE: &str = "by-message";
const SUPPRESSED_SK: &str = "SUPPRESSED";
const STALE_PK: &str = "HISTORY#STALE";

/// A recipient found by its message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dispatch_id: String,
    pub key: RecipientKey,
}

fn suppression_pk(address: &str) -> String {
    format!("SUPPRESSED#{}", suppression_key(address))
}

impl Store {
    /// The recipient a provider message id belongs to, through the `by-message` index.
    pub async fn recipient_by_message(&self, message_id: &str) -> Result<Option<Located>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_BY_MESSAGE)
            .key_condition_expression("message_id = :m")
            .expression_attribute_values(":m", s(message_id))
            .limit(2)
            .send()
            .await
            .map_err(Error::aws("Query by-message"))?;
        let Some(item) = out.items().first() else {
            return Ok(None);
        };
        let pk = get_s(item, "pk").unwrap_or_default();
        let sk = get_s(item, "sk").unwrap_or_default();
        let parsed = pk
            .strip_prefix("D#")
            .and_then(|rest| rest.rsplit_once("#S#"))
            .and_then(|(id, shard)| shard.parse::<u32>().ok().map(|sh| (id.to_string(), sh)));
        match parsed {
            Some((dispatch_id, shard)) => Ok(Some(Located {
                dispatch_id,
                key: RecipientKey { shard, sk },
            })),
            None => Err(Error::Malformed(format!(
                "message {message_id} is indexed on '{pk}', which is not a recipient"
            ))),
        }
    }

    /// Records a receipt on a recipient unless it already holds one as strong. Returns
    /// whether the record changed.
    pub async fn record_receipt(&self, at: &Located, event: &Event) -> Result<bool> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(crate::dynamodb::shard_pk(&at.dispatch_id, at.key.shard)))
            .key("sk", s(at.key.sk.clone()))
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(receipt_rank) OR receipt_rank < :rank)",
            )
            .expression_attribute_values(":r", s(event.receipt.as_str()))
            .expression_attribute_values(":rank", n(event.receipt.rank()))
            .expression_attribute_values(":at", s(event.at.clone()));
        let mut set = String::from("SET receipt = :r, receipt_rank = :rank, receipt_at = :at");
        match &event.detail {
            Some(d) => {
                set.push_str(", receipt_detail = :d");
                req = req.expression_attribute_values(":d", s(d.clone()));
            }
            None => set.push_str(" REMOVE receipt_detail"),
        }
        let req = req.update_expression(set);
        match crate::dynamodb::counters::retrying_conflicts(|| req.clone().send()).await {
            Ok(_) => Ok(true),
            Err(e) if crate::dynamodb::is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("UpdateItem receipt")(e)),
        }
    }

    /// Puts addresses on the suppression list (a later entry replaces an earlier one).
    pub async fn suppress(&self, entries: &[Suppression]) -> Result<()> {
        for e in entries {
            let mut item: Item = HashMap::from([
                ("pk".to_string(), s(suppression_pk(&e.address))),
                ("sk".to_string(), s(SUPPRESSED_SK)),
                ("address".to_string(), s(suppression_key(&e.address))),
                ("reason".to_string(), s(e.reason.clone())),
                ("at".to_string(), s(e.at.clone())),
                // Not `message_id`: the entry must not be found as a recipient by it.
                ("source_message_id".to_string(), s(e.message_id.clone())),
            ]);
            if let Some(d) = &e.detail {
                item.insert("detail".into(), s(d.clone()));
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(Error::aws("PutItem suppression"))?;
        }
        Ok(())
    }

    /// The suppression entries of the given addresses, by suppression key.
    pub async fn suppressed(&self, addresses: &[String]) -> Result<HashMap<String, Suppression>> {
        let mut keys: Vec<String> = addresses.iter().map(|a| suppression_key(a)).collect();
        keys.sort();
        keys.dedup();
        let items = self
            .batch_get(
                keys.iter()
                    .map(|a| {
                        HashMap::from([
                            ("pk".to_string(), s(suppression_pk(a))),
                            ("sk".to_string(), s(SUPPRESSED_SK)),
                        ])
                    })
                    .collect(),
                false,
            )
            .await?;
        let mut found = HashMap::new();
        for item in items {
            if let Some(address) = get_s(&item, "address") {
                found.insert(
                    address.clone(),
                    Suppression {
                        address,
                        reason: get_s(&item, "reason").unwrap_or_default(),
                        detail: get_s(&item, "detail"),
                        at: get_s(&item, "at").unwrap_or_default(),
                        message_id: get_s(&item, "source_message_id").unwrap_or_default(),
                    },
                );
            }
        }
        Ok(found)
    }

    /// Marks a finished dispatch's history as stale: a receipt changed a recipient after it
    /// was written.
    pub async fn mark_history_stale(&self, dispatch_id: &str, since: &str) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(STALE_PK))
            .item("sk", s(dispatch_id))
            .item("since", s(since))
            .send()
            .await
            .map_err(Error::aws("PutItem stale history"))?;
        Ok(())
    }

    /// Dispatches whose history is stale, with the mark's time, at most `limit`.
    pub async fn stale_histories(&self, limit: i32) -> Result<Vec<(String, String)>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(STALE_PK))
            .limit(limit)
            .send()
            .await
            .map_err(Error::aws("Query stale histories"))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| Some((get_s(i, "sk")?, get_s(i, "since").unwrap_or_default())))
            .collect())
    }

    /// Clears a stale mark, unless a newer receipt renewed it meanwhile.
    pub async fn history_refreshed(&self, dispatch_id: &str, since: &str) -> Result<bool> {
        match self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(STALE_PK))
            .key("sk", s(dispatch_id))
            .condition_expression("#since = :since")
            .expression_attribute_names("#since", "since")
            .expression_attribute_values(":since", AttributeValue::S(since.to_string()))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if crate::dynamodb::is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("DeleteItem stale history")(e)),
        }
    }
}

#[async_trait::async_trait]
impl engine::ports::StaleHistories for Store {
    async fn stale(&self, limit: i32) -> Result<Vec<(String, String)>> {
        self.stale_histories(limit).await
    }

    async fn refreshed(&self, dispatch_id: &str, since: &str) -> Result<bool> {
        self.history_refreshed(dispatch_id, since).await
    }
}
