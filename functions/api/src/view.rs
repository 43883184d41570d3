//! A dispatch as the portal shows it.

use domain::model::{Dispatch, DispatchState, RecipientState};
use serde::{Deserialize, Serialize};

/// A dispatch as the portal shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DispatchView {
    #[serde(flatten)]
    pub dispatch: Dispatch,
    /// "X of Y sent".
    pub progress: String,
    /// Recipients per recipient state, from the dispatch's counters: `pending` counts those
    /// not yet sent (being sent included); in a rejected or cancelled dispatch they are
    /// `rejected`.
    pub recipient_states: std::collections::BTreeMap<String, u64>,
}

/// Recipients per state, as the counters give them.
pub(crate) fn recipient_states(d: &Dispatch) -> std::collections::BTreeMap<String, u64> {
    let c = &d.counts;
    let not_sent = if matches!(d.state, DispatchState::Rejected | DispatchState::Cancelled) {
        RecipientState::Rejected
    } else {
        RecipientState::Pending
    };
    [
        (RecipientState::Invalid, c.invalid),
        (RecipientState::Excluded, c.excluded),
        (RecipientState::Sent, c.sent),
        (RecipientState::Created, c.created),
        (RecipientState::Failed, c.failed),
        (RecipientState::Unknown, c.unknown),
        (not_sent, c.outstanding()),
    ]
    .into_iter()
    .map(|(s, n)| (s.as_str().to_string(), n))
    .collect()
}

impl From<Dispatch> for DispatchView {
    fn from(d: Dispatch) -> Self {
        let c = &d.counts;
        let progress = if c.created > 0 {
            format!("{} of {} sent or created", c.sent + c.created, c.valid)
        } else {
            format!("{} of {} sent", c.sent, c.valid)
        };
        DispatchView {
            recipient_states: recipient_states(&d),
            dispatch: d,
            progress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_states_add_up_to_the_list() {
        let mut d = Dispatch::arrived("d", "incoming/d/", 1);
        d.state = DispatchState::Sending;
        d.counts = domain::model::Counts {
            total: 10,
            valid: 7,
            invalid: 2,
            excluded: 1,
            sent: 2,
            failed: 1,
            unknown: 1,
            stuck: 0,
            created: 1,
        };
        let by = recipient_states(&d);
        assert_eq!(by.values().sum::<u64>(), d.counts.total);
        assert_eq!(by["created"], 1);
        assert_eq!(
            DispatchView::from(d.clone()).progress,
            "3 of 7 sent or created"
        );
        assert_eq!(by["pending"], 2);
        assert_eq!(by["invalid"], 2);
        d.state = DispatchState::Rejected;
        let by = recipient_states(&d);
        assert_eq!((by["rejected"], by.get("pending")), (2, None));
    }
}
