//! Recipient items: storing a validated list, paging a shard, single-recipient state changes,
//! and the dead-letter queue's stuck marks.

use super::counters::retrying_conflicts;
use super::*;

pub(crate) fn recipient_item(r: &Recipient, key: &RecipientKey) -> Item {
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
    opt(&mut item, "postal", &r.postal);
    opt(&mut item, "followed_up_at", &r.followed_up_at);
    if !r.fallbacks.is_empty() {
        item.insert("fallbacks".into(), reaches(&r.fallbacks));
    }
    if !r.print_sort.is_empty() {
        item.insert(
            "print_sort".into(),
            AttributeValue::L(r.print_sort.iter().map(|v| s(v.clone())).collect()),
        );
    }
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
        print_sort: item
            .get("print_sort")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        postal: get_s(item, "postal"),
        fallbacks: item
            .get("fallbacks")
            .and_then(|v| v.as_l().ok())
            .map(|l| {
                l.iter()
                    .filter_map(|v| {
                        let m = v.as_m().ok()?;
                        Some(domain::model::Reach {
                            channel: get_s(m, "channel")?.parse().ok()?,
                            address: get_s(m, "address")?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        followed_up_at: get_s(item, "followed_up_at"),
    };
    Ok((key, r))
}

/// A page of a shard.
#[derive(Debug, Default)]
pub struct Page {
    pub recipients: Vec<(RecipientKey, Recipient)>,
    /// Sort key to continue after, when there is more.
    pub next: Option<String>,
}

impl Store {
    pub(crate) fn update_recipient(
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
            let req = self
                .update_recipient(id, key)
                .update_expression("SET stuck_at = :now, updated_at = :now")
                .condition_expression("#state = :pending AND attribute_not_exists(stuck_at)")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
                .expression_attribute_values(":now", s(now_rfc3339()));
            let res = retrying_conflicts(|| req.clone().send()).await;
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

    /// The records of the given keys that exist (strongly consistent), in no particular order.
    pub async fn recipients_by_keys(
        &self,
        dispatch_id: &str,
        keys: &[RecipientKey],
    ) -> Result<Vec<(RecipientKey, Recipient)>> {
        let items = keys
            .iter()
            .map(|k| {
                Item::from([
                    ("pk".to_string(), s(shard_pk(dispatch_id, k.shard))),
                    ("sk".to_string(), s(k.sk.clone())),
                ])
            })
            .collect();
        self.batch_get(items, true)
            .await?
            .iter()
            .map(recipient_from)
            .collect()
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

    pub(crate) async fn query_shard_filtered(
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

    pub(crate) async fn set_recipient_state(
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
        let req = self
            .update_recipient(dispatch_id, key)
            .update_expression(expr)
            .condition_expression("#state = :from")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values));
        let res = retrying_conflicts(|| req.clone().send()).await;
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

#[async_trait::async_trait]
impl engine::ports::RecipientRoll for Store {
    async fn page(
        &self,
        d: &Dispatch,
        shard: u32,
        after: Option<String>,
    ) -> Result<engine::ports::RecipientPage> {
        let page = self
            .query_shard(&d.id, shard, None, after, PASS_PAGE)
            .await?;
        Ok(engine::ports::RecipientPage {
            recipients: page.recipients,
            next: page.next,
        })
    }
}

/// Recipients asked for in one page of a pass over a dispatch (DynamoDB stops a page at
/// 1 MB before that).
const PASS_PAGE: i32 = 1000;

/// A recipient's fallback channels as stored: a list of `{channel, address}`.
pub(crate) fn reaches(list: &[domain::model::Reach]) -> AttributeValue {
    AttributeValue::L(
        list.iter()
            .map(|r| {
                AttributeValue::M(std::collections::HashMap::from([
                    ("channel".to_string(), s(r.channel.as_str())),
                    ("address".to_string(), s(r.address.clone())),
                ]))
            })
            .collect(),
    )
}
