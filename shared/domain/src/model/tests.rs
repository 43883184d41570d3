use super::*;

#[test]
fn dispatch_states_round_trip_through_their_names() {
    for st in DispatchState::ALL {
        assert_eq!(st.as_str().parse::<DispatchState>().unwrap(), st);
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(json, format!("\"{}\"", st.as_str()));
    }
    assert!("paused_forever".parse::<DispatchState>().is_err());
}

#[test]
fn dispatch_lifecycle_allows_only_the_forward_path() {
    use DispatchState::*;
    assert!(Validating.can_become(AwaitingApproval));
    assert!(Validating.can_become(ValidationFailed));
    assert!(AwaitingApproval.can_become(Approved));
    assert!(AwaitingApproval.can_become(Rejected));
    assert!(Approved.can_become(Sending));
    assert!(Sending.can_become(WaitingForContinuation));
    assert!(WaitingForContinuation.can_become(Sending));
    assert!(!WaitingForContinuation.can_become(Completed));
    assert!(Sending.can_become(Paused));
    assert!(WaitingForContinuation.can_become(Paused));
    assert!(Paused.can_become(Sending));
    assert!(!Paused.can_become(Completed));
    assert!(!AwaitingApproval.can_become(Paused));
    assert!(Sending.can_become(Completed));
    assert!(Sending.can_become(CompletedWithErrors));
    // A few that must never happen.
    assert!(!Validating.can_become(Approved));
    assert!(!ValidationFailed.can_become(Approved));
    // Repeat: before approval, a corrected package is validated again.
    assert!(ValidationFailed.can_become(Validating));
    assert!(AwaitingApproval.can_become(Validating));
    assert!(!Approved.can_become(Validating));
    assert!(!Sending.can_become(Validating));
    assert!(!Rejected.can_become(Approved));
    assert!(!Completed.can_become(Sending));
    // Rejecting stops a dispatch before or while it sends, not after.
    for from in [
        AwaitingApproval,
        Approved,
        Sending,
        WaitingForContinuation,
        Paused,
    ] {
        assert!(from.can_become(Rejected), "{from}");
    }
    assert!(!CompletedWithErrors.can_become(Rejected));
    assert!(!ValidationFailed.can_become(Rejected));
    // Started through the API: only its package's arrival moves it on.
    assert!(AwaitingUpload.can_become(Validating));
    assert!(!AwaitingUpload.can_become(AwaitingApproval));
    assert!(!AwaitingUpload.can_become(Approved));
    // Cancelling withdraws a dispatch before approval only.
    for from in [AwaitingUpload, ValidationFailed, AwaitingApproval] {
        assert!(from.can_become(Cancelled), "{from}");
    }
    for from in [Validating, Approved, Sending, Paused, Completed] {
        assert!(!from.can_become(Cancelled), "{from}");
    }
    assert!(!Approved.can_become(Approved));
    // Every final state is a dead end.
    for from in DispatchState::ALL.into_iter().filter(|s| s.is_final()) {
        for to in DispatchState::ALL {
            assert!(!from.can_become(to), "{from} -> {to} must be refused");
        }
    }
}

#[test]
fn recipient_transitions_never_leave_a_final_state() {
    use RecipientState::*;
    assert!(Pending.can_become(Sending));
    assert!(Sending.can_become(Sent));
    assert!(Sending.can_become(Failed));
    assert!(Sending.can_become(Pending));
    assert!(
        !Pending.can_become(Sent),
        "a send always goes through a claim"
    );
    assert!(!Invalid.can_become(Pending));
    // Only an operator's resend, or the follow-up of a sent message that did not arrive on
    // the next channel, leads out of a final state, and only back to pending.
    for from in RecipientState::ALL.into_iter().filter(|s| s.is_final()) {
        for to in RecipientState::ALL {
            let again = (from.may_be_resent() || from == Sent) && to == Pending;
            assert_eq!(from.can_become(to), again, "{from} -> {to}");
        }
    }
    assert!(Failed.may_be_resent() && Unknown.may_be_resent());
    assert!(!Sent.may_be_resent() && !Rejected.may_be_resent() && !Invalid.may_be_resent());
    assert!(Pending.can_become(Excluded), "removed before approval");
    assert!(!Sent.can_become(Excluded));
}

#[test]
fn channels_parse_from_operator_words() {
    assert_eq!("E-mail".parse::<Channel>().unwrap(), Channel::Email);
    assert_eq!(" SMS ".parse::<Channel>().unwrap(), Channel::Sms);
    assert_eq!("Post".parse::<Channel>().unwrap(), Channel::Letter);
    assert_eq!("letter".parse::<Channel>().unwrap(), Channel::Letter);
    assert!("fax".parse::<Channel>().is_err());
}

#[test]
fn outstanding_counts_only_valid_recipients_without_a_result() {
    let c = Counts {
        total: 10,
        valid: 8,
        invalid: 2,
        sent: 3,
        failed: 1,
        unknown: 1,
        stuck: 0,
        excluded: 0,
        created: 1,
    };
    assert_eq!(c.outstanding(), 2);
}

#[test]
fn only_a_dispatch_without_any_loss_or_exclusion_closes_by_itself() {
    let mut d = Dispatch::arrived("d", "incoming/d/", 1);
    d.state = DispatchState::Sending;
    d.counts = Counts {
        total: 2,
        valid: 2,
        sent: 2,
        ..Counts::default()
    };
    assert_eq!(d.final_state(), DispatchState::Completed);
    d.counts.invalid = 1;
    assert_eq!(d.final_state(), DispatchState::CompletedWithErrors);
    d.counts.invalid = 0;
    d.counts.excluded = 1;
    assert_eq!(d.final_state(), DispatchState::CompletedWithErrors);
}

#[test]
fn a_failed_delivery_is_followed_up_once_within_its_time_and_never_after_delivery() {
    use crate::model::{calls_for_follow_up, follow_up_of, Reach};
    let mut r = Recipient::pending("d", "1", 2);
    r.state = RecipientState::Sent;
    r.channel = Some(Channel::Email);
    r.sent_at = Some("2026-12-04T10:00:00Z".into());
    r.fallbacks = vec![Reach {
        channel: Channel::Letter,
        address: "Ann\nStoregade 1\n8000 Aarhus C".into(),
    }];
    let within = 3600;
    assert_eq!(
        follow_up_of(&r, "2026-12-04T10:30:00Z", within).map(|f| f.channel),
        Some(Channel::Letter)
    );
    assert!(
        follow_up_of(&r, "2026-12-04T11:00:01Z", within).is_none(),
        "too late"
    );
    let mut delivered = r.clone();
    delivered.receipt = Some(Receipt::Delivered);
    assert!(follow_up_of(&delivered, "2026-12-04T10:30:00Z", within).is_none());
    let mut once = r.clone();
    once.followed_up_at = Some("2026-12-04T10:30:00Z".into());
    assert!(follow_up_of(&once, "2026-12-04T10:40:00Z", within).is_none());
    let mut removed = r.clone();
    removed.state = RecipientState::Excluded;
    assert!(follow_up_of(&removed, "2026-12-04T10:30:00Z", within).is_none());
    let mut nowhere = r.clone();
    nowhere.fallbacks.clear();
    assert!(follow_up_of(&nowhere, "2026-12-04T10:30:00Z", within).is_none());

    assert!(calls_for_follow_up(
        Receipt::Bounced,
        Some("Permanent/General: 550")
    ));
    assert!(!calls_for_follow_up(
        Receipt::Bounced,
        Some("Transient/MailboxFull")
    ));
    assert!(calls_for_follow_up(Receipt::Rejected, None));
    assert!(calls_for_follow_up(Receipt::Undelivered, None));
    assert!(!calls_for_follow_up(Receipt::Complained, None));
    assert!(!calls_for_follow_up(Receipt::Delivered, None));
}
