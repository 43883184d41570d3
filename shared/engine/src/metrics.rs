//! What sending reports of itself: per invocation and dispatch, how many recipients were
//! sent, failed, unknown, throttled or put back, and the rate achieved, as CloudWatch
//! embedded metric format lines (one JSON object on a line of the function's log, which
//! CloudWatch turns into metrics without an API call).

use crate::send::Tally;
use serde_json::{json, Map, Value};

/// The namespace of the metrics in CloudWatch.
pub const NAMESPACE: &str = "MassDispatch";

/// One invocation's sends for one dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct SendFigures {
    pub dispatch_id: String,
    pub sent: u64,
    pub failed: u64,
    pub unknown: u64,
    pub throttled: u64,
    pub quota_reached: u64,
    pub blocked: u64,
    /// Put back on the queue for lack of time in the invocation.
    pub later: u64,
    /// How long the invocation's sends took, in seconds.
    pub seconds: f64,
}

impl SendFigures {
    pub fn of(dispatch_id: &str, t: &Tally, seconds: f64) -> SendFigures {
        SendFigures {
            dispatch_id: dispatch_id.to_string(),
            sent: t.sent,
            failed: t.failed,
            unknown: t.unknown,
            throttled: t.throttled,
            quota_reached: t.quota_reached,
            blocked: t.blocked,
            later: t.later.len() as u64,
            seconds,
        }
    }

    /// Recipients sent per second of the invocation.
    pub fn achieved_rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.sent as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The embedded metric format line of these figures, from function `function` at Unix
    /// milliseconds `at_ms`: the counts by dispatch, and by function alone for alarms and the
    /// dashboard.
    pub fn emf_line(&self, function: &str, at_ms: i64) -> String {
        let counts: [(&str, u64); 7] = [
            ("Sent", self.sent),
            ("Failed", self.failed),
            ("Unknown", self.unknown),
            ("Throttled", self.throttled),
            ("QuotaReached", self.quota_reached),
            ("Blocked", self.blocked),
            ("PutBack", self.later),
        ];
        let mut definitions: Vec<Value> = counts
            .iter()
            .map(|(name, _)| json!({"Name": name, "Unit": "Count"}))
            .collect();
        definitions.push(json!({"Name": "AchievedRate", "Unit": "Count/Second"}));
        definitions.push(json!({"Name": "SendSeconds", "Unit": "Seconds"}));
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": at_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Function"], ["Function", "Dispatch"]],
                    "Metrics": definitions,
                }],
            }),
        );
        line.insert("Function".into(), json!(function));
        line.insert("Dispatch".into(), json!(self.dispatch_id));
        for (name, value) in counts {
            line.insert(name.into(), json!(value));
        }
        line.insert("AchievedRate".into(), json!(self.achieved_rate()));
        line.insert("SendSeconds".into(), json!(self.seconds));
        Value::Object(line).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_every_metric_it_carries_under_both_dimension_sets() {
        let f = SendFigures {
            dispatch_id: "winter-notice".into(),
            sent: 40,
            failed: 1,
            unknown: 0,
            throttled: 2,
            quota_reached: 0,
            blocked: 0,
            later: 3,
            seconds: 0.8,
        };
        let line: Value = serde_json::from_str(&f.emf_line("send", 1_764_000_000_000)).unwrap();
        let meta = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_764_000_000_000i64);
        assert_eq!(meta["Namespace"], NAMESPACE);
        assert_eq!(
            meta["Dimensions"],
            json!([["Function"], ["Function", "Dispatch"]])
        );
        for d in ["Function", "Dispatch"] {
            assert!(line[d].is_string(), "dimension {d} has a value");
        }
        let declared: Vec<&str> = meta["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &declared {
            assert!(line[*name].is_number(), "{name} has a value");
        }
        assert_eq!(declared.len(), 9);
        assert_eq!(line["Sent"], 40);
        assert_eq!(line["PutBack"], 3);
        assert_eq!(line["AchievedRate"], 50.0);
    }
}
