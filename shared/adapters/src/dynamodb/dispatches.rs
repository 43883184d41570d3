//! Dispatch items: the record of each dispatch, its transitions (conditional writes on the
//! state), its stamps and its counters.

use super::counters::{get_signed, retrying_conflicts, signed, Tallies, COUNTED};
use super::*;

pub(crate) fn dispatch_item(d: &Dispatch) -> Item {
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
        ("created".into(), n(d.counts.created)),
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

/// The dispatch an item holds, without its counter slots.
#[cfg(test)]
pub(crate) fn dispatch_from(item: &Item) -> Result<Dispatch> {
    dispatch_with(item, &Tallies::default())
}

/// The dispatch an item holds, with the sum of its counter slots added.
pub(crate) fn dispatch_with(item: &Item, tallies: &Tallies) -> Result<Dispatch> {
    let state = req_s(item, "state")?;
    let counted = |i: usize| (get_signed(item, COUNTED[i]) + tallies.added[i]).max(0) as u64;
    let updated_at = req_s(item, "updated_at")?;
    Ok(Dispatch {
        id: req_s(item, "id")?,
        title: req_s(item, "title")?,
        state: state.parse().map_err(Error::Malformed)?,
        created_at: req_s(item, "created_at")?,
        updated_at: match &tallies.latest {
            Some(at) if *at > updated_at => at.clone(),
            _ => updated_at,
        },
        counts: Counts {
            total: get_n(item, "total"),
            valid: get_n(item, "valid"),
            invalid: get_n(item, "invalid"),
            sent: counted(0),
            failed: counted(1),
            unknown: counted(2),
            stuck: counted(3),
            created: counted(4),
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

impl Store {
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
        match &out.item {
            Some(item) => Ok(Some(self.dispatch_of(item).await?)),
            None => Ok(None),
        }
    }

    /// Only a dispatch's state, read strongly consistent.
    pub async fn dispatch_state(&self, id: &str) -> Result<Option<DispatchState>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(dispatch_pk(id)))
            .key("sk", s(DISPATCH_SK))
            .projection_expression("#state")
            .expression_attribute_names("#state", "state")
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::aws("GetItem"))?;
        out.item
            .as_ref()
            .map(|item| req_s(item, "state")?.parse().map_err(Error::Malformed))
            .transpose()
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
        self.dispatches_of(out.items()).await
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
        let mut items = Vec::new();
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
                items.extend(page.items().iter().cloned());
            }
        }
        self.dispatches_of(&items).await
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

    pub(crate) async fn write_in_state(
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
        let out = retrying_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(dispatch_pk(id)))
                .key("sk", s(DISPATCH_SK))
                .update_expression(expr.clone())
                .condition_expression(condition.clone())
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .return_values(ReturnValue::AllNew)
                .send()
        })
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
        match &out.attributes {
            Some(item) => self.dispatch_of(item).await,
            None => Err(Error::NotFound(id.to_string())),
        }
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
        retrying_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(dispatch_pk(id)))
                .key("sk", s(DISPATCH_SK))
                .update_expression(expr.clone())
                .condition_expression("attribute_exists(pk)")
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .send()
        })
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
        self.add_to_counters(id, [sent, failed, unknown, 0, 0])
            .await?;
        self.get_dispatch(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Counts recipients whose queue message went to the dead-letter queue.
    pub(crate) async fn add_stuck(&self, id: &str, recipients: u64) -> Result<()> {
        self.add_to_counters(id, [0, 0, 0, recipients, 0]).await
    }

    /// Sets the result counters to values counted from the records: the dispatch item's
    /// counts become what was counted less what its counter slots hold. Only for a dispatch
    /// whose records are quiet, as a result written between the read of the slots and this
    /// write would be counted twice or not at all.
    pub async fn set_results(
        &self,
        id: &str,
        [sent, created, failed, unknown]: [u64; 4],
    ) -> Result<Dispatch> {
        let slots = self.tallies(id).await?;
        let base = |i: usize, v: u64| signed(v as i64 - slots.added[i]);
        let out = retrying_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(dispatch_pk(id)))
                .key("sk", s(DISPATCH_SK))
                .update_expression(
                    "SET #sent = :s, #created = :c, #failed = :f, #unknown = :u, updated_at = :now",
                )
                .expression_attribute_names("#sent", "sent")
                .expression_attribute_names("#created", "created")
                .expression_attribute_names("#failed", "failed")
                .expression_attribute_names("#unknown", "unknown")
                .expression_attribute_values(":s", base(0, sent))
                .expression_attribute_values(":c", base(4, created))
                .expression_attribute_values(":f", base(1, failed))
                .expression_attribute_values(":u", base(2, unknown))
                .expression_attribute_values(":now", s(now_rfc3339()))
                .condition_expression("attribute_exists(pk)")
                .return_values(ReturnValue::AllNew)
                .send()
        })
        .await
        .map_err(|e| {
            if is_conditional_failure(&e) {
                Error::NotFound(id.to_string())
            } else {
                Error::aws("UpdateItem")(e)
            }
        })?;
        match &out.attributes {
            Some(item) => dispatch_with(item, &slots),
            None => Err(Error::NotFound(id.to_string())),
        }
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

    async fn state(&self, id: &str) -> Result<Option<DispatchState>> {
        self.dispatch_state(id).await
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
