//! A whole email dispatch on the local emulator, measured from every request the SDK sends
//! (they all pass through the logging proxy of tests/support):
//!
//! 1. AWS API calls per recipient, by service and operation, from validation to completion,
//!    and what they cost per 1,000,000 recipients at AWS list prices beside SES's own price.
//! 2. Rate accuracy: the configured email rate R against the rate the SendEmail requests
//!    reached the emulator at, and the busiest one-second window.
//!
//! `cargo bench --bench dispatch` (or `make bench`). Settings: BENCH_RECIPIENTS (default 3000),
//! BENCH_RATE (emails per second, default 50), BENCH_SENDERS (sender instances, default 4),
//! BENCH_PROVIDER_MS (how long SES takes to answer each SendEmail, held by the proxy; default
//! 0, AWS answers in tens of milliseconds).

use domain::config::vars;
use local::emulator::Emulator;
use local::runtime::Options;
use local::Local;
use mass_dispatch::proxy::{FaultProxy, Logged};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// AWS list prices (US East, N. Virginia; on-demand; USD) used for the cost table.
mod price {
    /// SES outbound email, per message.
    pub const SES_EMAIL: f64 = 0.10 / 1_000.0;
    /// SQS standard queue, per request (64 KB chunk).
    pub const SQS_REQUEST: f64 = 0.40 / 1_000_000.0;
    /// DynamoDB on-demand write request unit.
    pub const DDB_WRU: f64 = 0.625 / 1_000_000.0;
    /// DynamoDB on-demand read request unit.
    pub const DDB_RRU: f64 = 0.125 / 1_000_000.0;
    /// Lambda request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1_000_000.0;
    /// Lambda duration, arm64, per GB-second.
    pub const LAMBDA_GB_SECOND: f64 = 0.0000133334;
    /// S3 PUT/COPY/POST/LIST, per request.
    pub const S3_WRITE: f64 = 0.005 / 1_000.0;
    /// S3 GET and others, per request.
    pub const S3_READ: f64 = 0.0004 / 1_000.0;
}

/// Requests Lambda's SQS event source mapping makes in AWS (the local runtime makes them here).
fn is_polling(l: &Logged) -> bool {
    l.service == "sqs"
        && matches!(
            l.op.as_str(),
            "ReceiveMessage" | "DeleteMessageBatch" | "ChangeMessageVisibility"
        )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const MANIFEST: &str = r#"{
  "title": "Benchmark",
  "list": "list.csv",
  "channel": "email",
  "email": {"from": "Notices <notices@example.org>", "subject": "Your notice, {{ name }}", "text": "email.txt"}
}"#;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let recipients: usize = env_or("BENCH_RECIPIENTS", 3000);
    let rate: f64 = env_or("BENCH_RATE", 50.0);
    let senders: usize = env_or("BENCH_SENDERS", 4);
    let provider_ms: u64 = env_or("BENCH_PROVIDER_MS", 0);

    let emulator = Emulator::start().await.expect("emulator");
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let options = Options {
        endpoint: Some(proxy.url.clone()),
        senders: Some(senders),
        // As deployed: the resume schedule runs once a minute.
        tick_every: Duration::from_secs(60),
        overrides: vec![(vars::EMAIL_RATE_PER_SECOND, rate.to_string())],
        ..Options::default()
    };
    let local = Local::on(emulator, options).await.expect("local system");
    if provider_ms > 0 {
        proxy.add(
            |s| s.is_send_email(),
            mass_dispatch::proxy::Fault::Delay(Duration::from_millis(provider_ms)),
            0,
            None,
        );
    }
    let portal = local.portal();
    // The bench watches the dispatch straight from the emulator, past the proxy.
    let store = adapters::dynamodb::Store::new(
        aws_sdk_dynamodb::Client::new(&local.sdk),
        &local.system.config.table_name,
    );
    let mut csv = String::from("recipient_id,name,email\n");
    for i in 0..recipients {
        csv.push_str(&format!("{i},Name {i},person{i}@example.net\n"));
    }
    proxy.clear_log();
    let started = Instant::now();
    // The operator's upload goes straight to the emulator: only the system's calls count.
    local
        .upload("bench", "list.csv", csv.into_bytes())
        .await
        .expect("upload");
    local
        .upload(
            "bench",
            "email.txt",
            b"Dear {{ name }}, this is your notice.".to_vec(),
        )
        .await
        .expect("upload");
    local
        .upload("bench", "manifest.json", MANIFEST.as_bytes().to_vec())
        .await
        .expect("upload");
    let d = wait(&store, "awaiting_approval", Duration::from_secs(600)).await;
    let validated = started.elapsed();
    assert_eq!(d.counts.valid as usize, recipients, "every row is valid");
    let (status, body) = portal
        .post("/dispatches/bench/approve")
        .await
        .expect("approve");
    assert_eq!(status, 202, "{body}");
    let approved = Instant::now();
    let d = wait(&store, "completed", Duration::from_secs(3600)).await;
    let sending = approved.elapsed();
    assert_eq!(d.counts.sent as usize, recipients, "everyone was sent to");
    // Let the last deletes of queue messages land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = proxy.log();
    local.system.stop().await;

    println!(
        "\n# Dispatch of {recipients} email recipients, rate {rate}/s, {senders} sender instances, SES answering after {provider_ms} ms"
    );
    println!(
        "validation {:.1} s, approval to completion {:.1} s\n",
        validated.as_secs_f64(),
        sending.as_secs_f64()
    );
    calls_table(&log, recipients, senders, sending);
    rate_table(&log, rate);
}

async fn wait(
    store: &adapters::dynamodb::Store,
    state: &str,
    limit: Duration,
) -> domain::model::Dispatch {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(d)) = store.get_dispatch("bench").await {
            if d.state.as_str() == state {
                return d;
            }
            assert!(
                !d.state.is_final() || state == d.state.as_str(),
                "dispatch ended {} ({:?})",
                d.state,
                d.problems
            );
        }
        assert!(Instant::now() < deadline, "no {state} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn calls_table(log: &[Logged], recipients: usize, senders: usize, sending: Duration) {
    let mut by_op: BTreeMap<(String, String, bool), usize> = BTreeMap::new();
    let mut idle_polls = 0usize;
    let (mut wru, mut rru) = (0.0f64, 0.0f64);
    let (mut sqs, mut s3_write, mut s3_read, mut emails, mut invocations) = (0, 0, 0, 0, 0);
    for l in log {
        if l.op == "ReceiveMessage" && !l.delivered_messages {
            idle_polls += 1;
            continue;
        }
        *by_op
            .entry((l.service.clone(), l.op.clone(), is_polling(l)))
            .or_default() += 1;
        match (l.service.as_str(), l.op.as_str()) {
            ("dynamodb", "TransactWriteItems") => wru += 2.0 * l.write_items as f64,
            ("dynamodb", "GetItem") => rru += 1.0,
            ("dynamodb", "Query" | "Scan") => rru += (l.response_bytes as f64 / 4096.0).ceil(),
            ("dynamodb", _) => wru += l.write_items as f64,
            ("sqs", op) => {
                sqs += 1;
                if op == "ReceiveMessage" {
                    invocations += 1;
                }
            }
            ("s3", "PutObject" | "PUT bucket" | "POST bucket" | "GET bucket") => s3_write += 1,
            ("s3", _) => s3_read += 1,
            ("ses", "SendEmail") => emails += 1,
            _ => {}
        }
    }
    let n = recipients as f64;
    println!("## AWS API calls per recipient\n");
    println!("| service | operation | calls | per recipient |");
    println!("|---|---|---:|---:|");
    let (mut functions, mut polling) = (0usize, 0usize);
    for ((service, op, poll), calls) in &by_op {
        let who = if *poll { " (queue polling)" } else { "" };
        println!(
            "| {service} | {op}{who} | {calls} | {:.4} |",
            *calls as f64 / n
        );
        if *poll {
            polling += calls;
        } else {
            functions += calls;
        }
    }
    println!(
        "| **all** | functions' calls | {functions} | **{:.3}** |",
        functions as f64 / n
    );
    println!(
        "| **all** | with the queue polling that delivered work | {} | **{:.3}** |",
        functions + polling,
        (functions + polling) as f64 / n
    );
    println!(
        "\nIdle long polls (no message; a fixed cost per hour, not per recipient): {idle_polls}.\n"
    );

    // Lambda: one invocation per delivered batch; duration as if every sender instance was
    // busy for the whole send phase (an upper bound: they mostly wait for send slots).
    let gb_seconds = senders as f64 * send_memory_gb() * sending.as_secs_f64();
    let lambda = invocations as f64 * price::LAMBDA_REQUEST + gb_seconds * price::LAMBDA_GB_SECOND;
    let dynamodb = wru * price::DDB_WRU + rru * price::DDB_RRU;
    let queue = sqs as f64 * price::SQS_REQUEST;
    let s3 = s3_write as f64 * price::S3_WRITE + s3_read as f64 * price::S3_READ;
    let per_million = 1_000_000.0 / n;
    println!("## Cost per 1,000,000 recipients (AWS list prices, us-east-1)\n");
    println!("| item | basis in this run | USD per 1M recipients |");
    println!("|---|---|---:|");
    println!(
        "| DynamoDB | {wru:.0} write units, {rru:.0} read units | {:.2} |",
        dynamodb * per_million
    );
    println!("| SQS | {sqs} requests | {:.2} |", queue * per_million);
    println!(
        "| Lambda | {invocations} invocations, ≤ {gb_seconds:.0} GB-s | {:.2} |",
        lambda * per_million
    );
    println!(
        "| S3 | {s3_write} writes, {s3_read} reads | {:.2} |",
        s3 * per_million
    );
    let infra = (dynamodb + queue + lambda + s3) * per_million;
    println!("| **infrastructure** | | **{infra:.2}** |");
    println!(
        "| SES (for comparison) | {emails} emails | {:.2} |\n",
        emails as f64 * price::SES_EMAIL * per_million
    );
}

/// The send function's memory, from the deployment template.
fn send_memory_gb() -> f64 {
    let text = std::fs::read_to_string(local::deploy::template_path()).expect("template");
    let t: serde_json::Value = serde_json::from_str(&text).expect("template JSON");
    t["Resources"]["SendFunction"]["Properties"]["MemorySize"]
        .as_f64()
        .expect("SendFunction MemorySize")
        / 1024.0
}

fn rate_table(log: &[Logged], rate: f64) {
    let mut times: Vec<Instant> = log
        .iter()
        .filter(|l| l.service == "ses" && l.op == "SendEmail")
        .map(|l| l.at)
        .collect();
    times.sort();
    if times.len() < 2 {
        println!("too few emails to measure a rate");
        return;
    }
    let span = (*times.last().expect("last") - times[0]).as_secs_f64();
    let achieved = (times.len() - 1) as f64 / span;
    // The busiest window of one second that starts at a request.
    let (mut busiest, mut busiest_at) = (0, Duration::ZERO);
    let mut j = 0;
    for i in 0..times.len() {
        while j < times.len() && times[j] - times[i] < Duration::from_secs(1) {
            j += 1;
        }
        if j - i > busiest {
            busiest = j - i;
            busiest_at = times[i] - times[0];
        }
    }
    println!(
        "busiest second starts {:.1} s into the dispatch",
        busiest_at.as_secs_f64()
    );
    let first = times[0];
    let (gap, gap_at) = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[1] - first))
        .max()
        .unwrap_or_default();
    println!("## Rate accuracy (SendEmail requests as they reached the emulator)\n");
    println!("| configured R | emails | span | achieved | achieved / R | busiest 1 s window |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {rate}/s | {} | {span:.1} s | {achieved:.2}/s | {:.3} | {busiest} |",
        times.len(),
        achieved / rate
    );
    println!(
        "\nlongest pause between two sends: {} ms, {:.1} s into the dispatch",
        gap.as_millis(),
        gap_at.as_secs_f64()
    );
    println!(
        "achieved ≥ 0.95·R: {}; no one-second window above R: {}",
        if achieved >= 0.95 * rate { "yes" } else { "NO" },
        if busiest as f64 <= rate { "yes" } else { "NO" }
    );
}
