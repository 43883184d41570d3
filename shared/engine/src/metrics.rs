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
        let count = |name, v: u64| (name, "Count", json!(v));
        emf(
            at_ms,
            json!([["Function"], ["Function", "Dispatch"]]),
            vec![
                count("Sent", self.sent),
                count("Failed", self.failed),
                count("Unknown", self.unknown),
                count("Throttled", self.throttled),
                count("QuotaReached", self.quota_reached),
                count("Blocked", self.blocked),
                count("PutBack", self.later),
                ("AchievedRate", "Count/Second", json!(self.achieved_rate())),
                ("SendSeconds", "Seconds", json!(self.seconds)),
                count("ConflictsRetried", self.conflicts_retried),
            ],
            &[("Function", function), ("Dispatch", &self.dispatch_id)],
        )
    }

    /// One embedded metric format line per channel that had sends: its counts and the
    /// provider's answer times (`ProviderSeconds`, up to 100 values, which CloudWatch turns
    /// into a distribution), by function and channel and by function, dispatch and channel.
    pub fn channel_lines(&self, function: &str, at_ms: i64) -> Vec<String> {
        self.channels
            .iter()
            .map(|(channel, t)| {
                let count = |name, v: u64| (name, "Count", json!(v));
                let answers: Vec<f64> = t.answer_micros.iter().map(|us| *us as f64 / 1e6).collect();
                emf(
                    at_ms,
                    json!([["Function", "Channel"], ["Function", "Dispatch", "Channel"]]),
                    vec![
                        count("Sent", t.sent),
                        count("Failed", t.failed),
                        count("Unknown", t.unknown),
                        count("Throttled", t.throttled),
                        ("ProviderSeconds", "Seconds", json!(answers)),
                    ],
                    &[
                        ("Function", function),
                        ("Dispatch", &self.dispatch_id),
                        ("Channel", channel.as_str()),
                    ],
                )
            })
            .collect()
    }
}

/// One embedded metric format line: `metrics` (name, unit, value) declared under
/// `dimensions`, whose values are among `properties`.
fn emf(
    at_ms: i64,
    dimensions: Value,
    metrics: Vec<(&str, &str, Value)>,
    properties: &[(&str, &str)],
) -> String {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": definitions,
            }],
        }),
    );
    for (name, value) in properties {
        line.insert((*name).into(), json!(value));
    }
    for (name, _, value) in metrics {
        line.insert(name.into(), value);
    }
    Value::Object(line).to_string()
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
