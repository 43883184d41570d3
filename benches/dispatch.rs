//! A whole email dispatch on the local emulator, measured from every request the SDK sends
//! (they all pass through the logging proxy of tests/support):
//!
//! 1. AWS API calls per recipient, by service and operation, from validation to completion,
//!    and what they cost per 1,000,000 recipients at AWS list prices beside SES's own price.
//! 2. Rate accuracy: the configured email rate R against the rate the SendEmail requests
//!    reached the emulator at, and the busiest one-second window.
//!
//! 3. Per function: invocations, the longest beside its `Timeout`, and the most memory one
//!    invocation held at once beside its `MemorySize` (a counting allocator: every allocation
//!    counts against the invocation that made it), and that nobody was lost or sent twice.
//!
//! `cargo bench --bench dispatch` (or `make bench`). Settings: BENCH_RECIPIENTS (default 3000),
//! BENCH_RATE (emails per second, default 50), BENCH_SENDERS (sender instances, default 4),
//! BENCH_PROVIDER_MS (how long SES takes to answer each SendEmail, held by the proxy; default
//! 0, AWS answers in tens of milliseconds), BENCH_SMS_SHARE (the share of rows sent by SMS,
//! from a channel column; default 0) and BENCH_SMS_RATE (SMS per second; default the email
//! rate), BENCH_SHARDS (the list's key shards; default the stack's `KEY_SHARDS`, 16: the
//! emulator reads a shard's page in time that grows with the shard, so a large list on it
//! wants more).

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

/// Email and SMS by the list's channel column.
const MIXED_MANIFEST: &str = r#"{
  "title": "Benchmark",
  "list": "list.csv",
  "channel": "column",
  "columns": {"channel": "channel", "phone": "mobile"},
  "email": {"from": "Notices <notices@example.org>", "subject": "Your notice, {{ name }}", "text": "email.txt"},
  "sms": {"text": "sms.txt", "sender_id": "NOTICES"},
  "phone_region": "DK"
}"#;

#[global_allocator]
static ALLOCATOR: local::memory::Counting = local::memory::Counting;

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
    let sms_share: f64 = env_or("BENCH_SMS_SHARE", 0.0f64).clamp(0.0, 1.0);
    let sms_rate: f64 = env_or("BENCH_SMS_RATE", rate);
    let shards: Option<u32> = std::env::var("BENCH_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok());
    // Every n-th row goes by SMS.
    let sms_every = (sms_share > 0.0).then(|| (1.0 / sms_share).round().max(1.0) as usize);

    let emulator = Emulator::start().await.expect("emulator");
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    let options = Options {
        endpoint: Some(proxy.url.clone()),
        senders: Some(senders),
        // As deployed: the resume schedule runs once a minute.
        tick_every: Duration::from_secs(60),
        overrides: [
            (vars::EMAIL_RATE_PER_SECOND, rate.to_string()),
            (vars::SMS_RATE_PER_SECOND, sms_rate.to_string()),
        ]
        .into_iter()
        .chain(shards.map(|n| (vars::KEY_SHARDS, n.to_string())))
        .collect(),
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
    let mut csv = String::from("recipient_id,name,email,mobile,channel\n");
    let mut texts = 0usize;
    for i in 0..recipients {
        if sms_every.is_some_and(|n| i % n == 0) {
            texts += 1;
            // Danish mobile numbers, 26 xx xx xx: unique per row, every one valid.
            csv.push_str(&format!("{i},Name {i},,+45 26{i:06},sms\n"));
        } else {
            csv.push_str(&format!("{i},Name {i},person{i}@example.net,,email\n"));
        }
    }
    let emails = recipients - texts;
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
    if texts > 0 {
        local
            .upload(
                "bench",
                "sms.txt",
                b"Hi {{ name }}, your notice is ready.".to_vec(),
            )
            .await
            .expect("upload");
    }
    let manifest = if texts > 0 { MIXED_MANIFEST } else { MANIFEST };
    local
        .upload("bench", "manifest.json", manifest.as_bytes().to_vec())
        .await
        .expect("upload");
    let d = wait(&store, "awaiting_approval", Duration::from_secs(600)).await;
    let validated = started.elapsed();
    if d.counts.valid as usize != recipients {
        let records = store
            .all_recipients_keyed("bench", d.shards)
            .await
            .expect("records");
        let why: Vec<_> = records
            .iter()
            .filter(|(_, r)| r.state == domain::model::RecipientState::Invalid)
            .take(3)
            .map(|(_, r)| r.reason.clone())
            .collect();
        panic!("{} of {recipients} rows are valid: {why:?}", d.counts.valid);
    }
    let (status, body) = portal
        .post("/dispatches/bench/approve")
        .await
        .expect("approve");
    assert_eq!(status, 202, "{body}");
    let approved = Instant::now();
    let d = wait(&store, "completed", Duration::from_secs(3600)).await;
    let sending = approved.elapsed();
    assert_eq!(d.counts.sent as usize, recipients, "everyone was sent to");
    // What an operator reads once it is over: the dispatch, a page of its recipients, and
    // the links to its report and history (each an invocation of the API function).
    for path in [
        "/dispatches/bench",
        "/dispatches/bench/recipients",
        "/dispatches/bench/report",
        "/dispatches/bench/history",
    ] {
        match portal.get(path).await {
            Ok((status, _)) => println!("GET {path}: {status}"),
            Err(e) => println!("GET {path}: {e}"),
        }
    }
    // Let the last deletes of queue messages land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = proxy.log();
    let runs = local.system.invocations.all();
    // Read once the functions have stopped: the emulator answers a page of a large list
    // slowly, and slower still while the functions call it.
    local.system.stop().await;
    let mut records = Err(domain::Error::NotFound("not read yet".into()));
    for _ in 0..3 {
        records = store.all_recipients_keyed("bench", d.shards).await;
        if records.is_ok() {
            break;
        }
    }

    println!(
        "\n# Dispatch of {recipients} recipients ({emails} email, {texts} SMS), rate {rate}/s email and {sms_rate}/s SMS, {senders} sender instances, SES answering after {provider_ms} ms, {} key shards",
        d.shards
    );
    println!(
        "validation {:.1} s, approval to completion {:.1} s\n",
        validated.as_secs_f64(),
        sending.as_secs_f64()
    );
    calls_table(&log, recipients, senders, sending);
    rate_table(&log, rate);
    functions_table(&runs);
    once_table(
        &log,
        &d,
        records.as_deref().map_err(|e| e.to_string()),
        emails,
        texts,
    );
}

/// Per function: invocations, the longest against its timeout, the most memory one held.
fn functions_table(runs: &BTreeMap<&'static str, local::runtime::FunctionRuns>) {
    let text = std::fs::read_to_string(local::deploy::template_path()).expect("template");
    let t: serde_json::Value = serde_json::from_str(&text).expect("template JSON");
    println!("\n## Functions (each API request is an invocation of the API function)\n");
    println!("| function | invocations | timed out | longest | `Timeout` | most memory one invocation held | `MemorySize` | share |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (function, r) in runs {
        let props = &t["Resources"][*function]["Properties"];
        let memory_mb = props["MemorySize"].as_f64().unwrap_or(f64::NAN);
        let timeout = props["Timeout"].as_f64().unwrap_or(f64::NAN);
        let peak_mb = r.peak_bytes as f64 / (1024.0 * 1024.0);
        println!(
            "| {function} | {} | {} | {:.1} s | {timeout:.0} s | {peak_mb:.1} MB | {memory_mb:.0} MB | {:.1} % |",
            r.invocations,
            r.timed_out,
            r.longest.as_secs_f64(),
            100.0 * peak_mb / memory_mb
        );
    }
    println!(
        "\nthe bench process at its busiest (every function, the runtime and the proxy in one): {} MB",
        peak_rss_mb().map_or("?".to_string(), |m| format!("{m:.0}"))
    );
}

/// The process's peak resident memory (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Nobody lost, nobody sent twice: a provider request per recipient of each channel, and
/// every record sent with a message id of its own.
fn once_table(
    log: &[Logged],
    d: &domain::model::Dispatch,
    records: Result<&[(domain::keys::RecipientKey, domain::model::Recipient)], String>,
    emails: usize,
    texts: usize,
) {
    let asked = |op: &str| {
        log.iter()
            .filter(|l| l.op == op && matches!(l.service.as_str(), "ses" | "sns"))
            .count()
    };
    println!("\n## Once each\n");
    println!("| channel | recipients | provider requests | |");
    println!("|---|---:|---:|---|");
    for (channel, n, op) in [
        ("email", emails, "SendEmail"),
        ("SMS", texts, "Publish SMS"),
    ] {
        let requests = asked(op);
        println!(
            "| {channel} | {n} | {requests} | {} |",
            if requests == n {
                "once each"
            } else {
                "NOT once each"
            }
        );
    }
    let c = &d.counts;
    println!(
        "\ndispatch counters: sent {}, failed {}, unknown {}, stuck {}",
        c.sent, c.failed, c.unknown, c.stuck
    );
    match records {
        Ok(records) => {
            let sent = records
                .iter()
                .filter(|(_, r)| r.state == domain::model::RecipientState::Sent)
                .count();
            let ids: std::collections::HashSet<&str> = records
                .iter()
                .filter_map(|(_, r)| r.message_id.as_deref())
                .collect();
            println!(
                "records: {}, sent: {sent}, distinct message ids: {}; lost: {}",
                records.len(),
                ids.len(),
                records.len() - sent
            );
        }
        Err(e) => println!("the records could not be read back: {e}"),
    }
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
