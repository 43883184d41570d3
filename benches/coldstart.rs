//! Cold start of each function binary: the time from starting the process, as Lambda starts
//! it (a Runtime API on a local port, the configuration in its environment), to its first
//! request for an event, when its initialisation (configuration, tracing, the SDK clients,
//! anything a function loads before its first event) is done; and the binary's size.
//! Built with the bench profile (release optimisation; the release profile adds thin LTO).
//!
//! `cargo bench --bench coldstart`. BENCH_RUNS (default 5) starts of each.

use axum::extract::State;
use axum::routing::get;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FUNCTIONS: [&str; 6] = ["validate", "api", "fanout", "send", "resume", "receipts"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "build",
        "--quiet",
        "--profile",
        "bench",
        "--workspace",
        "--bins",
    ]);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
            || k == "OUT_DIR"
        {
            cmd.env_remove(&key);
        }
    }
    assert!(
        cmd.status().expect("cargo runs").success(),
        "the build failed"
    );
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("release")
}

type Seen = Arc<Mutex<Option<Instant>>>;

/// The Runtime API's "next event": notes when it was first asked, and never answers.
async fn next(State(seen): State<Seen>) -> &'static str {
    seen.lock().unwrap().get_or_insert_with(Instant::now);
    std::future::pending::<()>().await;
    ""
}

async fn start_once(bin: &std::path::Path, name: &str) -> Duration {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dead = "http://127.0.0.1:9";
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin.join(name))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "coldstart")
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_ENDPOINT_URL", dead)
        .env("TABLE_NAME", "table")
        .env("UPLOADS_BUCKET", "uploads")
        .env("REPORTS_BUCKET", "reports")
        .env("FANOUT_QUEUE_URL", format!("{dead}/000000000000/fanout"))
        .env("SEND_QUEUE_URL", format!("{dead}/000000000000/send"))
        .env("SETTLE_QUEUE_URL", format!("{dead}/000000000000/settle"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let took = loop {
        if let Some(at) = *seen.lock().unwrap() {
            break at - started;
        }
        assert!(Instant::now() < deadline, "{name} never asked for an event");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} ended before asking for an event: {status}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let _ = child.kill().await;
    server.abort();
    took
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bins = build();
    println!("\nCold start, {runs} starts of each function binary (bench profile)\n");
    println!("| function | binary | fastest start | median | slowest |");
    println!("|---|---:|---:|---:|---:|");
    for name in FUNCTIONS {
        let size = std::fs::metadata(bins.join(name)).map_or(0, |m| m.len());
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(start_once(&bins, name).await);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {name} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} ms |",
            size as f64 / 1e6,
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
}
