//! The local environment: the AWS emulator, the stack deployed into it from the template,
//! and the functions run in-process the way AWS would run them.

pub mod auth;
pub mod deploy;
pub mod emulator;
pub mod gateway;
pub mod iam;
pub mod memory;
pub mod portal;
pub mod runtime;

use anyhow::{Context, Result};
use std::path::Path;

/// Who the local helpers act as: the operator starts and uploads dispatches, the approver
/// approves them (four eyes).
pub const OPERATOR: &str = "operator";
pub const APPROVER: &str = "approver";

/// Everything running: the emulator and the system deployed on it.
pub struct Local {
    pub system: runtime::System,
    pub emulator: emulator::Emulator,
    pub sdk: aws_config::SdkConfig,
}

impl Local {
    /// Starts a fresh moto server, deploys the template and starts the runtime.
    pub async fn start(opts: runtime::Options) -> Result<Local> {
        Local::on(emulator::Emulator::start().await?, opts).await
    }

    /// Deploys the template into `emulator` and starts the runtime. The stack gets a new
    /// name each time, so an emulator that keeps state (LocalStack) can be used again. With
    /// `STACK_NAME` set, the runtime uses that stack, deployed before from the same template.
    pub async fn on(emulator: emulator::Emulator, opts: runtime::Options) -> Result<Local> {
        adapters::clients::init_tracing();
        let sdk = emulator.sdk_config().await;
        let name = format!(
            "mass-dispatch-{}",
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        let stack = match std::env::var("STACK_NAME") {
            // A stack deployed before from the same template (LocalStack's init hook).
            Ok(existing) if !existing.is_empty() => {
                deploy::attach(&sdk, &deploy::template_path(), &existing).await?
            }
            _ => deploy::deploy(&sdk, &deploy::template_path(), &name, &[]).await?,
        };
        let system = runtime::start(&sdk, stack, opts).await?;
        Ok(Local {
            system,
            emulator,
            sdk,
        })
    }

    /// Uploads a package folder to `incoming/<dispatch_id>/`, the manifest last.
    pub async fn upload_dir(&self, dispatch_id: &str, dir: &Path) -> Result<()> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
            .collect();
        files.sort_by_key(|(name, _)| (name == domain::manifest::MANIFEST_FILE, name.clone()));
        for (name, path) in files {
            self.upload(dispatch_id, &name, std::fs::read(&path)?)
                .await?;
        }
        Ok(())
    }

    /// Uploads the files of a package, `manifest.json` last whatever the order given.
    pub async fn upload_files(&self, dispatch_id: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let mut files = files.to_vec();
        files.sort_by_key(|(name, _)| *name == domain::manifest::MANIFEST_FILE);
        for (name, body) in files {
            self.upload(dispatch_id, name, body.to_vec()).await?;
        }
        Ok(())
    }

    /// Uploads one file of a package. Before the manifest (which starts validation), the
    /// operator starts the dispatch through the API, as the portal does; a dispatch that
    /// exists already (a repeat) stays as it is.
    pub async fn upload(&self, dispatch_id: &str, name: &str, body: Vec<u8>) -> Result<()> {
        if name == domain::manifest::MANIFEST_FILE {
            let (status, answer) = self
                .operator()
                .post_json("/dispatches", &serde_json::json!({ "id": dispatch_id }))
                .await?;
            if !matches!(status, 201 | 409) {
                tracing::warn!(dispatch = dispatch_id, status, %answer, "dispatch not started through the API");
            }
        }
        self.system
            .clients
            .s3
            .put_object()
            .bucket(&self.system.config.uploads_bucket)
            .key(format!(
                "{}{dispatch_id}/{name}",
                domain::manifest::INCOMING_PREFIX
            ))
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("cannot upload {name}"))?;
        Ok(())
    }

    /// The API as an approver (`approver`, with the send permission) calls it.
    pub fn portal(&self) -> portal::Portal {
        self.portal_as(APPROVER, &[domain::identity::SEND_ROLE])
    }

    /// The API as an operator (`operator`, with the create permission) calls it.
    pub fn operator(&self) -> portal::Portal {
        self.portal_as(OPERATOR, &[domain::identity::CREATE_ROLE])
    }

    /// The API as `user` with `roles` calls it, with a token valid for an hour.
    pub fn portal_as(&self, user: &str, roles: &[&str]) -> portal::Portal {
        portal::Portal::new(&self.system.api_url).with_token(&self.system.issuer.mint(
            user,
            roles,
            std::time::Duration::from_secs(3600),
        ))
    }

    /// A queue subscribed to the operators' topic, as an operator's inbox.
    pub async fn operator_inbox(&self, name: &str) -> Result<String> {
        let topic = self
            .system
            .config
            .operator_topic_arn
            .clone()
            .context("the stack has no operator topic")?;
        let sqs = &self.system.clients.sqs;
        let url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await?
            .queue_url()
            .context("no queue url")?
            .to_string();
        let arn_name = aws_sdk_sqs::types::QueueAttributeName::QueueArn;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(arn_name.clone())
            .send()
            .await?
            .attributes()
            .and_then(|a| a.get(&arn_name).cloned())
            .context("no queue arn")?;
        self.system
            .clients
            .sns
            .subscribe()
            .topic_arn(topic)
            .protocol("sqs")
            .endpoint(arn)
            .send()
            .await?;
        Ok(url)
    }

    /// The notifications waiting in an inbox, taken out: (dispatch, event, subject, the
    /// SNS envelope).
    pub async fn operator_notices(
        &self,
        inbox: &str,
    ) -> Result<Vec<(String, String, String, serde_json::Value)>> {
        let sqs = &self.system.clients.sqs;
        let mut out = Vec::new();
        loop {
            let got = sqs
                .receive_message()
                .queue_url(inbox)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            let messages = got.messages();
            if messages.is_empty() {
                return Ok(out);
            }
            for m in messages {
                let envelope: serde_json::Value =
                    serde_json::from_str(m.body().unwrap_or_default())?;
                let notice: serde_json::Value =
                    serde_json::from_str(envelope["Message"].as_str().unwrap_or_default())?;
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                out.push((
                    text(&notice["dispatch_id"]),
                    text(&notice["event"]),
                    text(&envelope["Subject"]),
                    envelope.clone(),
                ));
                if let Some(handle) = m.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(inbox)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
    }

    /// The API without a token.
    pub fn anonymous(&self) -> portal::Portal {
        portal::Portal::new(&self.system.api_url)
    }
}
