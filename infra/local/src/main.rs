//! `local demo`: a whole dispatch end to end on the emulator.
//! `local up`: the system running locally until Ctrl-C, for trying it by hand.
//! `local token <user> [roles] [minutes]`: a token the API of `local up` accepts.
//! `local iam-report`: which grants of each function's role the logged runs used.

use anyhow::{bail, Context, Result};
use local::{
    emulator::{repo_root, Emulator},
    runtime::Options,
    Local,
};
use serde_json::Value;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    adapters::clients::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo().await,
        Some("up") => up(args.get(1).and_then(|p| p.parse().ok()).unwrap_or(8080)).await,
        Some("token") if args.len() >= 2 => token(&args[1..]),
        Some("iam-report") => iam_report(),
        _ => {
            eprintln!("usage: local demo | local up [api-port] | local token <user> [ROLE,ROLE] [minutes] | local iam-report");
            std::process::exit(2)
        }
    }
}

/// Each function role's grants against what the emulators of earlier runs (`make test`,
/// `make demo`) logged of its requests.
fn iam_report() -> Result<()> {
    let template: Value = serde_json::from_slice(&std::fs::read(local::deploy::template_path())?)?;
    let dir = local::emulator::iam_log_dir();
    let roles = local::iam::report(&template, &dir)?;
    println!(
        "# The functions' roles, from the authorisations logged in {}
",
        dir.display()
    );
    print!("{}", local::iam::print(&roles));
    Ok(())
}

fn counts(d: &Value) -> String {
    let c = &d["counts"];
    format!(
        "total {} | valid {} | invalid {} | excluded {} | sent {} | failed {} | unknown {}",
        c["total"], c["valid"], c["invalid"], c["excluded"], c["sent"], c["failed"], c["unknown"]
    )
}

/// The sending as it goes: on a terminal a live bar (recipients done of those to send, the
/// rate, the state and the counts), elsewhere a line each time the counts change.
struct SendingBar {
    bar: indicatif::ProgressBar,
    last: String,
    /// When the first recipient was done, for the rate.
    first_done: Option<std::time::Instant>,
}

impl SendingBar {
    fn new() -> SendingBar {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stdout(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "    [{bar:32}] {pos}/{len} done  {elapsed}  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        SendingBar {
            bar,
            last: String::new(),
            first_done: None,
        }
    }

    fn show(&mut self, d: &Value) {
        let c = &d["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        let state = d["state"].as_str().unwrap_or_default();
        let done = n("sent") + n("failed") + n("unknown");
        if done > 0 && self.first_done.is_none() {
            self.first_done = Some(std::time::Instant::now());
        }
        let secs = self
            .first_done
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let rate = if secs >= 1.0 {
            format!("{:.1}/s", done.saturating_sub(1) as f64 / secs)
        } else {
            "–".to_string()
        };
        if self.bar.is_hidden() {
            let line = format!(
                "    {state:<22} {}   {}",
                d["progress"].as_str().unwrap_or_default(),
                counts(d)
            );
            if line != self.last {
                println!("{line}");
                self.last = line;
            }
        } else {
            self.bar.set_length(n("valid"));
            self.bar.set_position(done);
            self.bar.set_message(format!(
                "{rate:>7}  {state:<22} failed {} | unknown {}",
                n("failed"),
                n("unknown")
            ));
        }
    }

    fn finish(&self) {
        if !self.bar.is_hidden() {
            self.bar.finish();
        }
    }
}

async fn demo() -> Result<()> {
    let id = "winter-notice";
    let package = repo_root().join("examples").join(id);
    println!("==> starting the AWS emulator (or using AWS_ENDPOINT_URL) and deploying infra/template.json into it");
    let local = Local::on(Emulator::from_env_or_start().await?, Options::default()).await?;
    let portal = local.portal();
    println!(
        "    emulator {}  API {}",
        local.emulator.endpoint, local.system.api_url
    );

    println!(
        "==> operator uploads {} to s3://{}/incoming/{id}/ (manifest last)",
        package.display(),
        local.system.config.uploads_bucket
    );
    local.upload_dir(id, &package).await?;

    println!("==> validation");
    let d = portal
        .wait_for(
            id,
            &["awaiting_approval", "validation_failed"],
            Duration::from_secs(120),
            |_| {},
        )
        .await?;
    println!(
        "    state: {}   {}",
        d["state"].as_str().unwrap_or_default(),
        counts(&d)
    );
    if d["state"] == "validation_failed" {
        bail!("validation failed: {}", d["problems"]);
    }
    if let Some(by_code) = d["validation"]["problems_by_code"].as_object() {
        for (code, n) in by_code {
            println!("    {n:>4} × {code}");
        }
    }
    for p in d["validation"]["first_problems"]
        .as_array()
        .into_iter()
        .flatten()
        .take(5)
    {
        println!(
            "    line {:<4} {:<10} {}",
            p["line"],
            p["recipient_id"].as_str().unwrap_or(""),
            p["message"].as_str().unwrap_or("")
        );
    }
    let (_, sample) = portal.get(&format!("/dispatches/{id}/sample")).await?;
    let sample: Value = serde_json::from_str(&sample)?;
    // Per channel, the first valid recipient's message and a few chosen at random.
    for (channel, shown) in [("email", "subject"), ("sms", "text")] {
        for m in sample[channel].as_array().into_iter().flatten() {
            let what = m["message"][shown]
                .as_str()
                .or(m["error"].as_str())
                .unwrap_or_default();
            println!(
                "    sample {channel} ({}) to {}: {}",
                m["chosen"].as_str().unwrap_or_default(),
                m["to"].as_str().unwrap_or_default(),
                what.lines().next().unwrap_or_default()
            );
        }
    }

    println!("==> approver approves through the API: POST /dispatches/{id}/approve");
    let (status, body) = portal.post(&format!("/dispatches/{id}/approve")).await?;
    if status != 202 {
        bail!("approval answered {status}: {body}");
    }
    println!(
        "    {status} {}",
        body["state"].as_str().unwrap_or_default()
    );

    println!(
        "==> sending (paced at {}/s email and {}/s SMS per sender)",
        local.system.config.email_rate_per_second, local.system.config.sms_rate_per_second
    );
    let mut bar = SendingBar::new();
    let d = portal
        .wait_for(
            id,
            &["completed", "completed_with_errors"],
            Duration::from_secs(600),
            |d| bar.show(d),
        )
        .await?;
    bar.finish();
    // The history document is written right after completion.
    let mut history = String::new();
    for _ in 0..100 {
        let (status, body) = portal.get(&format!("/dispatches/{id}/history")).await?;
        if status == 200 {
            history = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, report) = portal.get(&format!("/dispatches/{id}/report")).await?;
    let out = repo_root().join(".local/demo");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("validation-report.csv"), &report)?;
    std::fs::write(out.join("history.csv"), &history).context("cannot save the history")?;

    let mut d = portal.dispatch(id).await?.unwrap_or(d);
    if d["state"] == "completed_with_errors" {
        println!("==> the operator reviews the history and closes the dispatch: POST /dispatches/{id}/close");
        let (status, body) = portal.post(&format!("/dispatches/{id}/close")).await?;
        if status != 200 {
            bail!("closing answered {status}: {body}");
        }
        // Closing has the history written again, with the close in its audit rows, by a job.
        if let Some(link) = body["history_job"]["link"].as_str() {
            let job = portal.wait_for_job(link, Duration::from_secs(120)).await?;
            println!(
                "    history job {}: {}",
                job["state"].as_str().unwrap_or_default(),
                job["outcome"].as_str().unwrap_or_default()
            );
        }
        d = body;
        let (status, body) = portal.get(&format!("/dispatches/{id}/history")).await?;
        if status == 200 {
            history = body;
            std::fs::write(out.join("history.csv"), &history).context("cannot save the history")?;
        }
    }
    // The list as uploaded, with each recipient's status appended (a link to the file).
    let (status, list) = portal
        .get_bytes(&format!("/dispatches/{id}/download?format=xlsx"))
        .await?;
    if status != 200 {
        bail!("the download answered {status}");
    }
    std::fs::write(out.join("list-with-status.xlsx"), &list)?;
    let (_, summary) = portal
        .get(&format!("/dispatches/{id}/history/summary"))
        .await?;
    std::fs::write(out.join("history-summary.json"), &summary)?;
    let accepted = match (
        local.emulator.sent_emails().await,
        local.emulator.sent_sms().await,
    ) {
        (Ok(e), Ok(s)) => format!("{} emails (SES), {} SMS (SNS)", e.len(), s.len()),
        // Another emulator keeps what it accepted elsewhere: LocalStack lists SES messages
        // at /_aws/ses and SMS at /_aws/sns/sms-messages.
        _ => format!(
            "not readable the moto way here; on LocalStack see {0}/_aws/ses and {0}/_aws/sns/sms-messages",
            local.emulator.endpoint
        ),
    };
    println!(
        "==> done: {} ({})",
        d["state"].as_str().unwrap_or_default(),
        d["completion"].as_str().unwrap_or_default()
    );
    println!("    {}", counts(&d));
    println!("    accepted by the emulator: {accepted}");
    println!(
        "    validation report: s3://{}/{}  (copy: {})",
        local.system.config.reports_bucket,
        d["report_key"].as_str().unwrap_or(""),
        out.join("validation-report.csv").display()
    );
    println!(
        "    history:           s3://{}/{}  (copy: {}, {} rows)",
        local.system.config.reports_bucket,
        d["history_key"].as_str().unwrap_or(""),
        out.join("history.csv").display(),
        history
            .lines()
            .filter(|l| l.starts_with("recipient,"))
            .count()
    );
    println!(
        "    history summary with the audit trail: {}",
        out.join("history-summary.json").display()
    );
    println!(
        "    the list with each recipient's status: {}",
        out.join("list-with-status.xlsx").display()
    );
    local.system.stop().await;
    Ok(())
}

/// The signing key of `local up` and `local token`, kept in `.local/` (not committed).
fn key_file() -> std::path::PathBuf {
    repo_root().join(".local").join("signing-key")
}

/// Prints a token for a user and roles (comma-separated; default both permissions).
fn token(args: &[String]) -> Result<()> {
    let user = &args[0];
    let roles: Vec<&str> = args
        .get(1)
        .map(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec![domain::identity::CREATE_ROLE, domain::identity::SEND_ROLE]);
    let minutes: u64 = match args.get(2) {
        Some(m) => m.parse().context("minutes must be a number")?,
        None => 60,
    };
    let issuer = local::auth::LocalIssuer::from_file(&key_file())?;
    println!(
        "{}",
        issuer.mint(user, &roles, Duration::from_secs(minutes * 60))
    );
    Ok(())
}

async fn up(port: u16) -> Result<()> {
    let options = Options {
        api_port: port,
        issuer: local::auth::LocalIssuer::from_file(&key_file())?,
        ..Options::default()
    };
    let local = Local::on(Emulator::from_env_or_start().await?, options).await?;
    let c = &local.system.config;
    println!("AWS emulator: {}", local.emulator.endpoint);
    println!("API:          {}", local.system.api_url);
    println!(
        "uploads:      s3://{}/incoming/<dispatch-id>/",
        c.uploads_bucket
    );
    println!(
        "reports:      s3://{}/dispatches/<dispatch-id>/",
        c.reports_bucket
    );
    println!("A token (for 12 hours) for `curl -H \"Authorization: Bearer $TOKEN\"`, user 'operator' with both permissions; `make token WHO=<user> ROLES=<ROLE,ROLE>` mints others:");
    println!(
        "  export TOKEN={}",
        local.system.issuer.mint(
            "operator",
            &[domain::identity::CREATE_ROLE, domain::identity::SEND_ROLE],
            Duration::from_secs(12 * 3600)
        )
    );
    println!("For the AWS CLI:");
    for (k, v) in local.emulator.env() {
        println!("  export {k}={v}");
    }
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    local.system.stop().await;
    Ok(())
}
