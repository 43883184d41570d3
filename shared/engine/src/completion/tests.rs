//! Completion on the in-memory ports: when a dispatch completes, how it is closed, and the
//! history documents it leaves.

use super::*;
use crate::memory::{MemoryDocuments, MemoryStore};
use domain::model::{Channel, Recipient};

struct World {
    store: Arc<MemoryStore>,
    docs: Arc<MemoryDocuments>,
    completer: Completer,
}

/// A sending dispatch whose recipients are in `states`.
fn world(states: &[RecipientState]) -> World {
    let store = Arc::new(MemoryStore::new());
    let docs = Arc::new(MemoryDocuments::default());
    let mut d = Dispatch::arrived("d1", "incoming/d1/", 2);
    d.state = DispatchState::Sending;
    d.counts.total = states.len() as u64;
    d.counts.valid = states.len() as u64;
    for (i, state) in states.iter().enumerate() {
        let r = Recipient {
            channel: Some(Channel::Email),
            address: Some(format!("r{i}@example.org")),
            state: *state,
            ..Recipient::pending("d1", &i.to_string(), i as u64 + 2)
        };
        match state {
            RecipientState::Sent => d.counts.sent += 1,
            RecipientState::Failed => d.counts.failed += 1,
            RecipientState::Unknown => d.counts.unknown += 1,
            _ => {}
        }
        store.put_recipient(domain::keys::recipient_key(&r, true, 2), r);
    }
    store.put_dispatch(d);
    let completer = Completer::new(CompletionPorts {
        dispatches: store.clone(),
        recipients: store.clone(),
        audit: store.clone(),
        documents: docs.clone(),
        stale: store.clone(),
    });
    World {
        store,
        docs,
        completer,
    }
}

impl World {
    /// Completes the dispatch as it is stored, which must complete.
    async fn complete(&self) -> Dispatch {
        self.completer
            .complete_if_done(&self.dispatch())
            .await
            .unwrap()
            .expect("completed")
    }

    fn dispatch(&self) -> Dispatch {
        self.store.get("d1").expect("dispatch")
    }

    fn history(&self) -> String {
        let (body, content_type) = self.docs.get(&keys::history("d1")).expect("history");
        assert_eq!(content_type, "text/csv; charset=utf-8");
        String::from_utf8(body).expect("UTF-8")
    }

    fn summary(&self) -> serde_json::Value {
        let (body, _) = self
            .docs
            .get(&keys::history_summary("d1"))
            .expect("summary");
        serde_json::from_slice(&body).expect("JSON")
    }

    async fn trail(&self) -> Vec<(String, String, String)> {
        self.store
            .trail("d1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action, e.outcome))
            .collect()
    }
}

#[tokio::test]
async fn a_dispatch_sent_to_everyone_completes_by_itself_with_its_history() {
    let w = world(&[RecipientState::Sent, RecipientState::Sent]);
    let done = w.complete().await;
    assert_eq!(done.state, DispatchState::Completed);
    assert_eq!(done.completion.as_deref(), Some("automatic"));
    assert!(done.completed_at.is_some());
    assert_eq!(
        done.history_key.as_deref(),
        Some(keys::history("d1").as_str())
    );
    let stored = w.dispatch();
    assert_eq!(stored.state, DispatchState::Completed);
    assert_eq!(stored.history_key, done.history_key);
    let history = w.history();
    assert_eq!(
        history.lines().count(),
        1 + 2 + 1,
        "header, recipients, audit row"
    );
    assert!(history
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("recipient,0,2,email,r0@example.org,yes"));
    assert!(history.contains("audit,"));
    assert_eq!(w.summary()["counts"]["sent"], 2);
    assert_eq!(
        w.trail().await,
        vec![(
            SYSTEM.to_string(),
            "completed".to_string(),
            "completed (automatic)".to_string()
        )]
    );
    // A second look finds nothing to do.
    assert!(w.completer.complete_if_done(&done).await.unwrap().is_none());
}

#[tokio::test]
async fn a_dispatch_with_errors_waits_for_a_close_that_rewrites_its_history() {
    let w = world(&[RecipientState::Sent, RecipientState::Failed]);
    let done = w.complete().await;
    assert_eq!(done.state, DispatchState::CompletedWithErrors);
    assert_eq!(done.completion, None);
    let closed = w.completer.close("d1", "ops-2").await.unwrap();
    assert_eq!(closed.state, DispatchState::Closed);
    assert_eq!(closed.completion.as_deref(), Some("manual"));
    assert_eq!(closed.closed_by.as_deref(), Some("ops-2"));
    assert!(w.history().contains("ops-2,closed,closed (manual)"));
    assert_eq!(w.summary()["state"], "closed");
    // Closed once: a second close is refused.
    match w.completer.close("d1", "ops-2").await {
        Err(Error::Conflict(why)) => assert!(why.contains("completed_with_errors"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_recipient_still_open_keeps_the_dispatch_open_whatever_the_counters_say() {
    let w = world(&[RecipientState::Sent, RecipientState::Sending]);
    let mut d = w.dispatch();
    d.counts.sent = 2;
    assert!(w.completer.complete_if_done(&d).await.unwrap().is_none());
    assert_eq!(w.dispatch().state, DispatchState::Sending);
    assert!(w.docs.get(&keys::history("d1")).is_none());
}

#[tokio::test]
async fn only_a_sending_dispatch_with_nothing_outstanding_is_looked_at() {
    let w = world(&[RecipientState::Sent, RecipientState::Pending]);
    assert!(w
        .completer
        .complete_if_done(&w.dispatch())
        .await
        .unwrap()
        .is_none());
    w.store.set_state("d1", DispatchState::Paused);
    let mut d = w.dispatch();
    d.counts.sent = 2;
    assert!(w.completer.complete_if_done(&d).await.unwrap().is_none());
    assert_eq!(w.dispatch().state, DispatchState::Paused);
}

/// What the scheduled run and its settle messages do with the stale marks, in one go: the
/// dispatches whose history was written again.
async fn refresh_stale(completer: &crate::completion::Completer) -> Vec<String> {
    let mut written = Vec::new();
    for (id, since) in completer.stale_marks(10).await.unwrap() {
        if completer.refresh_history(&id, &since).await.unwrap() {
            written.push(id);
        }
    }
    written
}

#[tokio::test]
async fn stale_histories_of_finished_dispatches_are_written_again_and_their_marks_cleared() {
    let w = world(&[RecipientState::Sent]);
    w.complete().await;
    w.store.append("d1", "ops-1", "archive", "completed").await;
    w.store.mark_history_stale("d1", "2026-12-01T00:00:00Z");
    assert!(!w.history().contains("ops-1,archive"));
    let written = refresh_stale(&w.completer).await;
    assert_eq!(written, vec!["d1".to_string()]);
    assert!(w.history().contains("ops-1,archive"), "{}", w.history());
    assert!(w.store.stale(10).await.unwrap().is_empty(), "mark cleared");
}

#[tokio::test]
async fn a_stale_mark_of_a_dispatch_not_finished_writes_nothing() {
    let w = world(&[RecipientState::Pending]);
    w.store.mark_history_stale("d1", "2026-12-01T00:00:00Z");
    let written = refresh_stale(&w.completer).await;
    assert!(written.is_empty());
    assert!(w.docs.get(&keys::history("d1")).is_none());
    assert!(w.store.stale(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_pass_reads_every_page_of_every_shard_and_the_history_follows_the_list() {
    // 20 recipients over two shards, pages of three: many pages, stored by id.
    let w = world(&[RecipientState::Sent; 20]);
    w.complete().await;
    let history = w.history();
    let lines: Vec<u64> = history
        .lines()
        .filter(|l| l.starts_with("recipient,"))
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, (2..22).collect::<Vec<u64>>());
    assert_eq!(w.summary()["reachable"], 20);
    assert_eq!(w.summary()["shipment_states"]["sent"], 20);
}

#[tokio::test]
async fn an_open_recipient_in_any_page_keeps_the_dispatch_open() {
    let mut states = [RecipientState::Sent; 20];
    states[19] = RecipientState::Pending;
    let w = world(&states);
    let mut d = w.dispatch();
    d.counts.sent = 20;
    assert!(w.completer.complete_if_done(&d).await.unwrap().is_none());
    assert_eq!(w.dispatch().state, DispatchState::Sending);
    assert!(w.docs.get(&keys::history("d1")).is_none());
}
