//! The AWS emulator (moto server) as a child process on a free loopback port.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};

/// Region the local environment uses.
pub const REGION: &str = "eu-west-1";

pub struct Emulator {
    /// The moto server this process started; none for an emulator that was already running.
    child: Option<Child>,
    pub endpoint: String,
    pub port: u16,
    /// The administrator's key: the deployment, the tests' set-up and their inspection use
    /// it; the functions use their own roles.
    pub admin: Credentials,
    /// Where it logs its authorisations (a moto server started here).
    iam_log: Option<PathBuf>,
    conflict_log: Option<PathBuf>,
}

/// How long a DynamoDB transaction takes in the emulator, its items held meanwhile so that
/// concurrent writers collide as on DynamoDB (`DYNAMODB_TRANSACTION_HOLD_MS`; "0" turns
/// the conflicts off). DynamoDB's own transactions take some tens of milliseconds.
pub const TRANSACTION_HOLD_MS: &str = "20";

/// Requests moto answers before it enforces IAM: the administrator's user, its policy and
/// its key. Every later request must be signed by a key and is allowed what its policies grant.
const UNCHECKED_REQUESTS: usize = 3;

/// Where the emulator started by this process logs its authorisations (one file per
/// emulator), for the report of grants no code path uses.
pub fn iam_log_dir() -> PathBuf {
    repo_root().join(".local/iam")
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
        Emulator::start_with(&[]).await
    }

    /// Starts one with extra settings for the launcher (`DYNAMODB_TRANSACTION_HOLD_MS`,
    /// [`TRANSACTION_HOLD_MS`] unless given).
    pub async fn start_with(settings: &[(&str, &str)]) -> Result<Emulator> {
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
        std::fs::create_dir_all(iam_log_dir())?;
        let iam_log = iam_log_dir().join(format!(
            "{}-{port}.jsonl",
            time::OffsetDateTime::now_utc().unix_timestamp()
        ));
        let conflict_log = std::env::temp_dir().join(format!("moto-{port}-conflicts.jsonl"));
        let _ = std::fs::remove_file(&conflict_log);
        let child = Command::new(&program)
            .arg(&launcher)
            .args(["127.0.0.1", &port.to_string()])
            .env(
                "INITIAL_NO_AUTH_ACTION_COUNT",
                UNCHECKED_REQUESTS.to_string(),
            )
            .env("IAM_LOG", &iam_log)
            .env("DYNAMODB_TRANSACTION_HOLD_MS", TRANSACTION_HOLD_MS)
            .env("DYNAMODB_CONFLICT_LOG", &conflict_log)
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut emulator = Emulator {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            admin: test_credentials(),
            iam_log: Some(iam_log),
            conflict_log: Some(conflict_log),
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
                    emulator.admin = emulator.create_administrator(&client).await?;
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
            admin: test_credentials(),
            iam_log: None,
            conflict_log: None,
        })
    }

    /// The administrator, made with the requests moto answers unchecked: a user, a policy
    /// allowing everything, and its key.
    async fn create_administrator(&self, client: &reqwest::Client) -> Result<Credentials> {
        let call = |params: &'static [(&'static str, &'static str)]| async move {
            let answer = client
                .post(&self.endpoint)
                // moto routes by the signing scope; the signature is not checked yet.
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, \
                     SignedHeaders=host, Signature=0",
                )
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form(&[params, &[("Version", "2010-05-08")][..]].concat()))
                .send()
                .await?;
            let status = answer.status();
            let text = answer.text().await?;
            if !status.is_success() {
                bail!("IAM {}: {status} {text}", params[0].1);
            }
            Ok::<String, anyhow::Error>(text)
        };
        call(&[("Action", "CreateUser"), ("UserName", "administrator")]).await?;
        call(&[
            ("Action", "PutUserPolicy"),
            ("UserName", "administrator"),
            ("PolicyName", "everything"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            ),
        ])
        .await?;
        let key = call(&[("Action", "CreateAccessKey"), ("UserName", "administrator")]).await?;
        let field = |name: &str| {
            let open = format!("<{name}>");
            let start = key.find(&open).map(|i| i + open.len());
            let end = key.find(&format!("</{name}>"));
            match (start, end) {
                (Some(s), Some(e)) if s <= e => Ok(key[s..e].to_string()),
                _ => Err(anyhow::anyhow!(
                    "no {name} in the CreateAccessKey answer: {key}"
                )),
            }
        };
        Ok(Credentials::new(
            field("AccessKeyId")?,
            field("SecretAccessKey")?,
            None,
            None,
            "administrator",
        ))
    }

    /// The emulator named by `AWS_ENDPOINT_URL`, or a new moto server when it is not set.
    pub async fn from_env_or_start() -> Result<Emulator> {
        match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) if !url.is_empty() => Emulator::external(&url),
            _ => Emulator::start().await,
        }
    }

    /// An SDK configuration pointed at the emulator, as the administrator. For an emulator
    /// named by `AWS_ENDPOINT_URL` the endpoints are left to the SDK's standard settings, so
    /// a per-service one (`AWS_ENDPOINT_URL_DYNAMODB`, say) takes precedence.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let started_here = self.child.is_some();
        sdk_config_for(
            started_here.then_some(self.endpoint.as_str()),
            SharedCredentialsProvider::new(self.admin.clone()),
        )
        .await
    }

    /// Environment variables that point a process (a function binary, the AWS CLI) here,
    /// as the administrator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", self.admin.access_key_id().to_string()),
            (
                "AWS_SECRET_ACCESS_KEY",
                self.admin.secret_access_key().to_string(),
            ),
        ]
    }

    /// The transaction conflicts the emulator answered so far, by operation
    /// (`TransactWriteItems`, `UpdateItem`, ...).
    pub fn conflicts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut out = std::collections::BTreeMap::new();
        let Some(path) = &self.conflict_log else {
            return Ok(out);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for line in text.lines() {
            // A line being written as this reads is left for the next read.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let target = v["target"].as_str().unwrap_or_default().to_string();
            *out.entry(target).or_default() += 1;
        }
        Ok(out)
    }

    /// The actions this emulator allowed a function (by its logical id, `SendFunction`), with
    /// how many times, from its log of authorisations.
    pub fn allowed_to(&self, function: &str) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut out = std::collections::BTreeMap::new();
        let Some(path) = &self.iam_log else {
            return Ok(out);
        };
        for d in crate::iam::decisions(&std::fs::read_to_string(path)?) {
            if d.allowed && d.function == function {
                *out.entry(d.action).or_default() += 1;
            }
        }
        Ok(out)
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

    /// Emails SES accepted, simple and raw (MIME, parsed back), in the order sent within
    /// each kind.
    pub async fn sent_emails(&self) -> Result<Vec<SentEmail>> {
        let data = self.data().await?;
        let raw = data["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut out: Vec<SentEmail> = raw.iter().map(SentEmail::from_raw).collect();
        let list = data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        out.extend(list.into_iter().map(|m| {
            SentEmail {
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
                ..Default::default()
            }
        }));
        Ok(out)
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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentEmail {
    pub id: String,
    pub from: String,
    /// The addresses of the To header (of the destination, for a simple message).
    pub to: Vec<String>,
    pub subject: String,
    /// The HTML part when the message has one, else the text part (what the emulator keeps).
    pub body: String,
    /// The text part of a MIME message.
    pub text: String,
    /// Every envelope recipient SES was given (destination and headers, as the emulator
    /// lists them).
    pub envelope: Vec<String>,
    /// The MIME message as SES took it; empty for a simple message.
    pub raw: String,
    /// The header block of the MIME message.
    pub headers: String,
    pub reply_to: Vec<String>,
    /// Attachments: file name, content type, bytes.
    pub attachments: Vec<(String, String, Vec<u8>)>,
}

impl SentEmail {
    fn from_raw(m: &Value) -> SentEmail {
        use mail_parser::{MimeHeaders, PartType};
        let raw = m["raw_data"].as_str().unwrap_or_default().to_string();
        let mut out = SentEmail {
            id: m["id"].as_str().unwrap_or_default().to_string(),
            from: m["source"].as_str().unwrap_or_default().to_string(),
            envelope: m["destinations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            headers: raw.split("\r\n\r\n").next().unwrap_or_default().to_string(),
            ..Default::default()
        };
        let addresses = |a: Option<&mail_parser::Address>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
        };
        if let Some(msg) = mail_parser::MessageParser::default().parse(raw.as_bytes()) {
            out.to = addresses(msg.to());
            out.reply_to = addresses(msg.reply_to());
            out.subject = msg.subject().unwrap_or_default().to_string();
            out.text = msg
                .text_bodies()
                .find_map(|p| match &p.body {
                    PartType::Text(t) => Some(t.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            let html = msg.html_bodies().find_map(|p| match &p.body {
                PartType::Html(h) => Some(h.to_string()),
                _ => None,
            });
            out.body = html.unwrap_or_else(|| out.text.clone());
            out.attachments = msg
                .attachments()
                .map(|p| {
                    (
                        p.attachment_name().unwrap_or_default().to_string(),
                        p.content_type()
                            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
                            .unwrap_or_default(),
                        p.contents().to_vec(),
                    )
                })
                .collect();
        }
        out.raw = raw;
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    pub id: String,
    pub to: String,
    pub text: String,
}

/// A form body (`application/x-www-form-urlencoded`).
fn form(params: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The key an emulator that does not enforce IAM takes.
fn test_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "local")
}

/// An SDK configuration with the given credentials and the functions' timeouts and retries,
/// for `endpoint`, or for the endpoints of the SDK's standard settings when `None`.
async fn sdk_config_for(
    endpoint: Option<&str>,
    credentials: SharedCredentialsProvider,
) -> aws_config::SdkConfig {
    let region = std::env::var("AWS_REGION")
        .ok()
        .filter(|r| endpoint.is_none() && !r.is_empty())
        .unwrap_or_else(|| REGION.to_string());
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(credentials);
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
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
