//! The AWS emulator (moto server) as a child process on a free loopback port.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Region the local environment uses.
pub const REGION: &str = "eu-west-1";

pub struct Emulator {
    /// The moto server this process started; none for an emulator that was already running.
    child: Option<Child>,
    pub endpoint: String,
    pub port: u16,
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Python that has moto installed: `MOTO_PYTHON` when set, else the project's virtualenv.
pub fn moto_python() -> PathBuf {
    std::env::var_os("MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Emulator {
    /// Starts moto server (through `moto_atomic.py`, which gives its DynamoDB the atomic
    /// conditional writes DynamoDB has) and waits until it answers.
    pub async fn start() -> Result<Emulator> {
        let program = moto_python();
        if !program.exists() {
            bail!(
                "the AWS emulator is not installed at {} (run `make venv`, or set MOTO_PYTHON)",
                program.display()
            );
        }
        let launcher = repo_root().join("infra/local/moto_atomic.py");
        let port = free_port()?;
        let log = std::fs::File::create(std::env::temp_dir().join(format!("moto-{port}.log")))?;
        let child = Command::new(&program)
            .arg(&launcher)
            .args(["127.0.0.1", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let emulator = Emulator {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client
                .get(format!("{}/moto-api/", emulator.endpoint))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(emulator);
                }
            }
            if Instant::now() > deadline {
                bail!("the emulator did not answer on port {port} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An emulator that is already running (LocalStack, or a moto server started by hand).
    pub fn external(endpoint: &str) -> Result<Emulator> {
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .with_context(|| format!("no port in {endpoint}"))?;
        Ok(Emulator {
            child: None,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            port,
        })
    }

    /// The emulator named by `AWS_ENDPOINT_URL`, or a new moto server when it is not set.
    pub async fn from_env_or_start() -> Result<Emulator> {
        match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) if !url.is_empty() => Emulator::external(&url),
            _ => Emulator::start().await,
        }
    }

    /// An SDK configuration pointed at the emulator, with dummy credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "local",
            ));
        adapters::clients::sdk_config_from(loader).await
    }

    /// Environment variables that point a process (a function binary, the AWS CLI) here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ]
    }

    /// The emulator's record of everything it holds, including sent mail and SMS.
    pub async fn data(&self) -> Result<Value> {
        let v = reqwest::Client::new()
            .get(format!("{}/moto-api/data.json", self.endpoint))
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?;
        Ok(v)
    }

    /// Emails SES accepted: (to, subject, body).
    pub async fn sent_emails(&self) -> Result<Vec<SentEmail>> {
        let data = self.data().await?;
        let list = data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(list
            .into_iter()
            .map(|m| SentEmail {
                id: m["id"].as_str().unwrap_or_default().to_string(),
                from: m["source"].as_str().unwrap_or_default().to_string(),
                to: m["destinations"]["ToAddresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: m["subject"].as_str().unwrap_or_default().to_string(),
                body: m["body"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// SMS SNS accepted.
    pub async fn sent_sms(&self) -> Result<Vec<SentSms>> {
        let data = self.data().await?;
        let list = data["sns"]["SMS"].as_array().cloned().unwrap_or_default();
        Ok(list
            .into_iter()
            .map(|m| SentSms {
                id: m["message_id"].as_str().unwrap_or_default().to_string(),
                to: m["phone_number"].as_str().unwrap_or_default().to_string(),
                text: m["message"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// The HTML part when the message has one, else the text part (what the emulator keeps).
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    pub id: String,
    pub to: String,
    pub text: String,
}

/// An SDK configuration for an endpoint on this machine, with dummy credentials and the
/// functions' timeouts and retries.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "local",
        ));
    adapters::clients::sdk_config_from(loader).await
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
