//! Each function binary boots the way Lambda boots it (a Runtime API on a local port, the
//! configuration in its environment, the endpoint in `AWS_ENDPOINT_URL`) and answers one
//! sample event from `events/` against the emulator.

use local::deploy::{deploy, template_path, Stack};
use local::emulator::{repo_root, Emulator};
use mass_dispatch::{runtime_api, Answer};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Builds the function binaries. Built for the whole workspace, so that features resolve as
/// in `cargo test --workspace` and the build reuses what the test build compiled.
fn build_functions() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "--workspace", "--bins"]);
    // Variables cargo sets for a test process would look like a changed environment to build
    // scripts that watch them, and rebuild dependencies for nothing.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let set_for_tests =
            (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
                || k == "LD_LIBRARY_PATH"
                || k == "OUT_DIR"
                || k.starts_with("RUST_TEST");
        if set_for_tests {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the function binaries failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug")
}

fn event(name: &str, bucket: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(repo_root().join("events").join(name)).expect("sample event");
    text.replace("UPLOADS_BUCKET", bucket).into_bytes()
}

async fn boot(
    bin: &std::path::Path,
    name: &str,
    emulator: &Emulator,
    stack: &Stack,
    event: Vec<u8>,
) -> Answer {
    let (addr, answer) = runtime_api(event).await;
    let mut child = tokio::process::Command::new(bin.join(name))
        .envs(emulator.env())
        .envs(stack.env())
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "boot-test")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("function binary starts");
    let got = tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .unwrap_or_else(|_| panic!("{name} did not answer within 60 s"))
        .expect("answer delivered");
    let _ = child.kill().await;
    got
}

fn json(a: Answer, name: &str) -> Value {
    match a {
        Answer::Response(body) => serde_json::from_slice(&body).expect("JSON response"),
        other => panic!("{name} answered with an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_binary_boots_and_answers_a_sample_event() {
    let bins = build_functions();
    let emulator = Emulator::start().await.expect("emulator");
    let sdk = emulator.sdk_config().await;
    let stack = deploy(&sdk, &template_path(), "boot", &[])
        .await
        .expect("deploy");
    let config = stack.config(&[]).expect("config");
    // A runtime attached to the stack later (LocalStack's init hook deploys it) sees the
    // same outputs.
    let attached = local::deploy::attach(&sdk, &template_path(), "boot")
        .await
        .expect("attach");
    assert_eq!(attached.config(&[]).expect("config"), config);
    assert_eq!(attached.outputs.len(), stack.outputs.len());
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let store =
        adapters::dynamodb::Store::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table_name);

    // The package the sample notification names.
    let package = repo_root().join("examples/winter-notice");
    for name in [
        "recipients.csv",
        "email.txt",
        "email.html",
        "sms.txt",
        "manifest.json",
    ] {
        s3.put_object()
            .bucket(&config.uploads_bucket)
            .key(format!("incoming/winter-notice/{name}"))
            .body(
                std::fs::read(package.join(name))
                    .expect("example file")
                    .into(),
            )
            .send()
            .await
            .expect("upload");
    }

    // validate: reads the package and leaves the dispatch awaiting approval.
    let v = json(
        boot(
            &bins,
            "validate",
            &emulator,
            &stack,
            event("sqs-manifest-uploaded.json", &config.uploads_bucket),
        )
        .await,
        "validate",
    );
    assert_eq!(v["batchItemFailures"], serde_json::json!([]));
    let d = store
        .get_dispatch("winter-notice")
        .await
        .expect("read")
        .expect("dispatch stored");
    assert_eq!(d.state, domain::model::DispatchState::AwaitingApproval);
    assert_eq!(d.counts.total, 320);

    // fanout: the dispatch is not approved, so nothing is handed to the senders.
    let v = json(
        boot(
            &bins,
            "fanout",
            &emulator,
            &stack,
            event("sqs-fanout.json", ""),
        )
        .await,
        "fanout",
    );
    assert_eq!(v["batchItemFailures"], serde_json::json!([]));
    let d = store
        .get_dispatch("winter-notice")
        .await
        .expect("read")
        .expect("dispatch");
    assert_eq!(d.state, domain::model::DispatchState::AwaitingApproval);

    // send: refuses to send for a dispatch that is not sending, and hands the message back.
    let v = json(
        boot(&bins, "send", &emulator, &stack, event("sqs-send.json", "")).await,
        "send",
    );
    assert_eq!(
        v["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "7b2c5a1e-3f44-4c1a-9a7e-0d0f6c1e2b3a"}])
    );
    assert!(
        emulator
            .sent_emails()
            .await
            .expect("emulator data")
            .is_empty(),
        "nothing may be sent"
    );

    // resume: a scheduled run with nothing to do reports that.
    let v = json(
        boot(
            &bins,
            "resume",
            &emulator,
            &stack,
            event("eventbridge-schedule.json", ""),
        )
        .await,
        "resume",
    );
    assert_eq!(v["handed_out"], serde_json::json!([]), "{v}");

    // resume, on its settle queue: the dispatch is awaiting approval, not sending, so there
    // is nothing to settle and the message is done with.
    let v = json(
        boot(
            &bins,
            "resume",
            &emulator,
            &stack,
            event("sqs-settle.json", ""),
        )
        .await,
        "resume",
    );
    assert_eq!(v["batchItemFailures"], serde_json::json!([]), "{v}");
    let d = store
        .get_dispatch("winter-notice")
        .await
        .expect("read")
        .expect("dispatch");
    assert_eq!(d.state, domain::model::DispatchState::AwaitingApproval);

    // receipts: an SES delivery event (in SNS's envelope) for a message this system never
    // sent, from long ago, is dropped; a body that is no event is handed back to the queue.
    let v = json(
        boot(
            &bins,
            "receipts",
            &emulator,
            &stack,
            event("sqs-receipt.json", ""),
        )
        .await,
        "receipts",
    );
    assert_eq!(
        v["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "c0a1b2c3-0000-4000-8000-000000000002"}])
    );

    // api: an HTTP API (payload 2.0) request lists the dispatch.
    let v = json(
        boot(
            &bins,
            "api",
            &emulator,
            &stack,
            event("apigw-list-dispatches.json", ""),
        )
        .await,
        "api",
    );
    assert_eq!(v["statusCode"], 200);
    let body: Value = serde_json::from_str(v["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(body["dispatches"][0]["id"], "winter-notice");
    assert_eq!(body["dispatches"][0]["state"], "awaiting_approval");
}
