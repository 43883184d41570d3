//! What sending reports of itself: per invocation and dispatch, how many recipients were
//! sent, failed, unknown, throttled or put back, the rate achieved and the conflicting writes
//! tried again; and per channel, the same counts and how long the provider took to answer
//! each send. As CloudWatch embedded metric format lines (one JSON object on a line of the
//! function's log, which CloudWatch turns into metrics without an API call).

use crate::send::{ChannelTally, Tally};
use domain::model::Channel;
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
    /// Writes refused for a transaction conflict and sent again, in the invocation.
    pub conflicts_retried: u64,
    /// The counts by channel, with the provider's answer times.
    pub channels: Vec<(Channel, ChannelTally)>,
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
            conflicts_retried: 0,
            channels: t.channels.iter().map(|(c, t)| (*c, t.clone())).collect(),
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
        definitions.push(json!({"Name": "ConflictsRetried", "Unit": "Count"}));
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
        line.insert("ConflictsRetried".into(), json!(self.conflicts_retried));
        Value::Object(line).to_string()
    }

    /// One embedded metric format line per channel that had sends: its counts and the
    /// provider's answer times (`ProviderSeconds`, up to 100 values, which CloudWatch turns
    /// into a distribution), by function and channel and by function, dispatch and channel.
    pub fn channel_lines(&self, function: &str, at_ms: i64) -> Vec<String> {
        self.channels
            .iter()
            .map(|(channel, t)| {
                let counts: [(&str, u64); 4] = [
                    ("Sent", t.sent),
                    ("Failed", t.failed),
                    ("Unknown", t.unknown),
                    ("Throttled", t.throttled),
                ];
                let mut definitions: Vec<Value> = counts
                    .iter()
                    .map(|(name, _)| json!({"Name": name, "Unit": "Count"}))
                    .collect();
                definitions.push(json!({"Name": "ProviderSeconds", "Unit": "Seconds"}));
                let mut line = Map::new();
                line.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": at_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": NAMESPACE,
                            "Dimensions": [["Function", "Channel"], ["Function", "Dispatch", "Channel"]],
                            "Metrics": definitions,
                        }],
                    }),
                );
                line.insert("Function".into(), json!(function));
                line.insert("Dispatch".into(), json!(self.dispatch_id));
                line.insert("Channel".into(), json!(channel.as_str()));
                for (name, value) in counts {
                    line.insert(name.into(), json!(value));
                }
                let answers: Vec<f64> = t
                    .answer_micros
                    .iter()
                    .map(|us| *us as f64 / 1e6)
                    .collect();
                line.insert("ProviderSeconds".into(), json!(answers));
                Value::Object(line).to_string()
            })
            .collect()
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
            conflicts_retried: 2,
            channels: vec![
                (
                    Channel::Email,
                    ChannelTally {
                        sent: 30,
                        failed: 1,
                        unknown: 0,
                        throttled: 2,
                        answer_micros: vec![48_000, 52_500],
                    },
                ),
                (
                    Channel::Sms,
                    ChannelTally {
                        sent: 10,
                        ..ChannelTally::default()
                    },
                ),
            ],
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
        assert_eq!(declared.len(), 10);
        assert_eq!(line["Sent"], 40);
        assert_eq!(line["PutBack"], 3);
        assert_eq!(line["AchievedRate"], 50.0);
        assert_eq!(line["ConflictsRetried"], 2);

        let lines: Vec<Value> = f
            .channel_lines("send", 1_764_000_000_000)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let email = &lines[0];
        let meta = &email["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            meta["Dimensions"],
            json!([["Function", "Channel"], ["Function", "Dispatch", "Channel"]])
        );
        for name in meta["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
        {
            assert!(!email[name].is_null(), "{name} has a value");
        }
        assert_eq!(email["Channel"], "email");
        assert_eq!(email["Sent"], 30);
        assert_eq!(email["Throttled"], 2);
        assert_eq!(email["ProviderSeconds"], json!([0.048, 0.0525]));
        assert_eq!(lines[1]["Channel"], "sms");
        assert_eq!(lines[1]["Sent"], 10);
        assert_eq!(lines[1]["ProviderSeconds"], json!([]));
    }
}
