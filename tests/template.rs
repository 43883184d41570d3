//! The deployment template: cfn-lint (from the project's virtualenv) finds no error or
//! warning, and the properties the system relies on hold: every function package has its
//! function, every function's environment is the typed configuration, every queue has a
//! dead-letter queue after at least five receives and a visibility of at least six times its
//! function's timeout, every trigger reports partial batch failures under a concurrency cap,
//! and only what the emulator cannot run is left out locally; every alarm notifies the alarm
//! topic, and the dashboard and alarms on the functions' own metrics name what the sender emits.

use domain::config::vars;
use local::emulator::repo_root;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn template() -> Value {
    serde_json::from_slice(&std::fs::read(repo_root().join("infra/template.json")).unwrap())
        .unwrap()
}

fn resources(t: &Value, kind: &str) -> Vec<(String, Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect()
}

fn logical(v: &Value) -> String {
    v.get("Ref")
        .or_else(|| v.get("Fn::GetAtt").and_then(|a| a.get(0)))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{v} is not a reference"))
        .to_string()
}

/// CloudFormation reads a template from S3 up to 1 MB; in the request, only up to 51,200
/// bytes. The template goes through a bucket (the local deploy, the README's steps and the
/// LocalStack hook all send it so), and must stay within what that takes.
#[test]
fn the_template_fits_what_cloudformation_reads_from_a_bucket() {
    let size = std::fs::metadata(repo_root().join("infra/template.json"))
        .unwrap()
        .len() as usize;
    assert!(
        size <= local::deploy::MAX_TEMPLATE_URL_BYTES,
        "the template is {size} bytes"
    );
    let hook =
        std::fs::read_to_string(repo_root().join("infra/localstack/ready.d/00-ready.sh")).unwrap();
    if size > local::deploy::MAX_TEMPLATE_BODY_BYTES {
        assert!(
            hook.contains("--s3-bucket"),
            "the LocalStack hook sends the template in the request"
        );
        let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
        assert!(
            readme.contains("--s3-bucket"),
            "the README deploys the template in the request"
        );
    }
}

#[test]
fn cfn_lint_finds_nothing() {
    let lint = repo_root().join(".venv/bin/cfn-lint");
    assert!(
        lint.exists(),
        "{} is missing; `make venv` installs it",
        lint.display()
    );
    let out = std::process::Command::new(&lint)
        .arg(repo_root().join("infra/template.json"))
        .output()
        .expect("cfn-lint runs");
    assert!(
        out.status.success(),
        "cfn-lint exit {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_function_package_is_deployed_with_the_typed_configuration() {
    let t = template();
    let functions = resources(&t, "AWS::Lambda::Function");
    let packages: BTreeSet<String> = std::fs::read_dir(repo_root().join("functions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let zips: BTreeSet<String> = functions
        .iter()
        .map(|(_, f)| {
            let key = f["Properties"]["Code"]["S3Key"]["Fn::Sub"]
                .as_str()
                .unwrap();
            key.trim_start_matches("${ArtifactPrefix}/")
                .trim_end_matches(".zip")
                .to_string()
        })
        .collect();
    assert_eq!(zips, packages);
    let config: BTreeSet<&str> = vars::ALL.into_iter().collect();
    for (name, f) in &functions {
        let p = &f["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023", "{name}");
        assert_eq!(p["Architectures"], serde_json::json!(["arm64"]), "{name}");
        let env: BTreeSet<&str> = p["Environment"]["Variables"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "RUST_LOG")
            .collect();
        assert!(
            env.is_subset(&config),
            "{name} sets variables the configuration does not read: {:?}",
            env.difference(&config).collect::<Vec<_>>()
        );
        for required in [
            vars::TABLE_NAME,
            vars::UPLOADS_BUCKET,
            vars::REPORTS_BUCKET,
            vars::FANOUT_QUEUE_URL,
            vars::SEND_QUEUE_URL,
            vars::MAX_RECEIVES,
            vars::SES_CONFIGURATION_SET,
        ] {
            assert!(env.contains(required), "{name} lacks {required}");
        }
    }
}

#[test]
fn every_queue_redrives_and_outlasts_its_function() {
    let t = template();
    let functions: std::collections::HashMap<String, Value> =
        resources(&t, "AWS::Lambda::Function").into_iter().collect();
    let queues: std::collections::HashMap<String, Value> =
        resources(&t, "AWS::SQS::Queue").into_iter().collect();
    assert!(t["Parameters"]["MaxReceives"]["MinValue"].as_u64().unwrap() >= 5);
    let mut triggered = BTreeSet::new();
    for (name, m) in resources(&t, "AWS::Lambda::EventSourceMapping") {
        let p = &m["Properties"];
        assert_eq!(
            p["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"]),
            "{name}"
        );
        assert!(
            !p["ScalingConfig"]["MaximumConcurrency"].is_null(),
            "{name}"
        );
        let queue = logical(&p["EventSourceArn"]);
        let function = logical(&p["FunctionName"]);
        let q = &queues[&queue]["Properties"];
        assert_eq!(
            q["RedrivePolicy"]["maxReceiveCount"],
            serde_json::json!({"Ref": "MaxReceives"}),
            "{queue}"
        );
        let dlq = logical(&q["RedrivePolicy"]["deadLetterTargetArn"]);
        assert!(queues.contains_key(&dlq), "{queue}: {dlq}");
        let visibility = q["VisibilityTimeout"].as_u64().unwrap();
        let timeout = functions[&function]["Properties"]["Timeout"]
            .as_u64()
            .unwrap();
        assert!(
            visibility >= 6 * timeout,
            "{queue}: visibility {visibility} s < 6 × {function}'s {timeout} s"
        );
        triggered.insert(queue);
    }
    let with_dlq: BTreeSet<String> = queues
        .iter()
        .filter(|(_, q)| !q["Properties"]["RedrivePolicy"].is_null())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(triggered, with_dlq, "every work queue has a trigger");
    // Every dead-letter queue has an alarm on its depth.
    let alarmed: BTreeSet<String> = resources(&t, "AWS::CloudWatch::Alarm")
        .iter()
        .filter(|(_, a)| a["Properties"]["Namespace"] == "AWS/SQS")
        .map(|(_, a)| logical(&a["Properties"]["Dimensions"][0]["Value"]))
        .collect();
    for q in &with_dlq {
        let dlq = logical(&queues[q]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]);
        assert!(alarmed.contains(&dlq), "no alarm on {dlq}");
    }
}

#[test]
fn only_what_the_emulator_cannot_run_is_left_out_locally() {
    let t = template();
    let conditioned: BTreeSet<String> = t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Condition"] == "Functions")
        .map(|r| r["Type"].as_str().unwrap().to_string())
        .collect();
    let allowed = [
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Permission",
        // What exists only for the functions: their alarms and dashboard, schedule and API.
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::Events::Rule",
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Authorizer",
        "AWS::ApiGatewayV2::Integration",
        "AWS::ApiGatewayV2::Route",
        "AWS::ApiGatewayV2::Stage",
    ];
    for kind in &conditioned {
        assert!(
            allowed.contains(&kind.as_str()),
            "{kind} is left out locally"
        );
    }
    // Tables, queues, topics, buckets and the SES configuration are deployed everywhere, and
    // so are the functions' roles: the local runtime runs each function under its own.
    for (name, r) in t["Resources"].as_object().unwrap() {
        let kind = r["Type"].as_str().unwrap();
        if kind.starts_with("AWS::SQS::")
            || kind == "AWS::IAM::Role"
            || kind.starts_with("AWS::SNS::")
            || kind.starts_with("AWS::S3::")
            || kind.starts_with("AWS::DynamoDB::")
            || kind.starts_with("AWS::SES::")
        {
            assert!(r.get("Condition").is_none(), "{name} is conditioned");
        }
    }
    let alarms_on_functions = resources(&t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| a["Properties"]["Namespace"] == "AWS/Lambda")
        .count();
    assert_eq!(
        alarms_on_functions,
        resources(&t, "AWS::Lambda::Function").len()
    );
}

/// As the README says: `GET /health` and the unsubscribe links' endpoint need no caller, and
/// every other route is behind the JWT authorizer (one proxy route; the router answers the
/// paths).
#[test]
fn only_health_and_unsubscribe_are_reachable_without_a_token_and_every_other_route_is_behind_the_authorizer(
) {
    let t = template();
    assert_eq!(
        local::deploy::public_routes(&t),
        [
            ("GET".to_string(), "/health".to_string()),
            ("GET".to_string(), "/unsubscribe".to_string()),
            ("POST".to_string(), "/unsubscribe".to_string()),
        ]
    );
    let routes = resources(&t, "AWS::ApiGatewayV2::Route");
    let guarded: Vec<_> = routes
        .iter()
        .filter(|(_, r)| r["Properties"]["AuthorizationType"] != "NONE")
        .map(|(_, r)| {
            (
                r["Properties"]["RouteKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["Properties"]["AuthorizationType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        guarded,
        [("ANY /{proxy+}".to_string(), "JWT".to_string())],
        "every other path goes through the authorizer"
    );
}

/// Every alarm notifies the alarm topic, when it fires and when it clears; the alarms and the
/// dashboard on the functions' own metrics name only metrics the sender emits.
#[test]
fn every_alarm_notifies_the_alarm_topic_and_the_dashboard_shows_what_is_emitted() {
    let t = template();
    let alarms = resources(&t, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 12, "{}", alarms.len());
    for (name, a) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            assert_eq!(
                a["Properties"][actions],
                json!([{"Ref": "AlarmTopic"}]),
                "{name}: {actions}"
            );
        }
    }
    assert_eq!(t["Resources"]["AlarmTopic"]["Type"], "AWS::SNS::Topic");
    assert_eq!(
        t["Outputs"]["AlarmTopicArn"]["Value"],
        json!({"Ref": "AlarmTopic"})
    );

    let figures = engine::metrics::SendFigures {
        dispatch_id: "d".into(),
        sent: 1,
        failed: 0,
        unknown: 0,
        throttled: 0,
        quota_reached: 0,
        blocked: 0,
        later: 0,
        seconds: 1.0,
        conflicts_retried: 0,
        channels: vec![(
            domain::model::Channel::Email,
            engine::send::ChannelTally::default(),
        )],
    };
    let mut lines = vec![figures.emf_line("send", 0)];
    lines.extend(figures.channel_lines("send", 0));
    let mut emitted = BTreeSet::new();
    for line in &lines {
        let line: Value = serde_json::from_str(line).unwrap();
        for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            emitted.insert(m["Name"].as_str().unwrap().to_string());
        }
    }
    for (name, a) in &alarms {
        if a["Properties"]["Namespace"] == engine::metrics::NAMESPACE {
            let metric = a["Properties"]["MetricName"].as_str().unwrap();
            assert!(
                emitted.contains(metric),
                "{name} watches {metric}, never emitted"
            );
            assert_eq!(
                a["Properties"]["Dimensions"],
                json!([{"Name": "Function", "Value": "send"}]),
                "{name}"
            );
        }
    }
    let body = t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("the dashboard body is a substituted string");
    let body: Value = serde_json::from_str(body).expect("the dashboard body is JSON");
    let mut shown = BTreeSet::new();
    for w in body["widgets"].as_array().unwrap() {
        for m in w["properties"]["metrics"].as_array().unwrap() {
            if m[0] == engine::metrics::NAMESPACE {
                shown.insert(m[1].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(
        shown, emitted,
        "the dashboard shows every metric emitted, and only those"
    );
}
