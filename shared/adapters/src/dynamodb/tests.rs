use super::dispatches::{dispatch_from, dispatch_item};
use super::recipients::{recipient_from, recipient_item};
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
            created: 0,
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
