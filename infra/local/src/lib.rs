//! The local environment: the AWS emulator, the stack deployed into it from the template,
//! and the functions run in-process the way AWS would run them.

pub mod deploy;
pub mod emulator;
pub mod portal;
pub mod runtime;

use anyhow::{Context, Result};
use std::path::Path;

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
        shared::aws::init_tracing();
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
        files.sort_by_key(|(name, _)| (name == shared::manifest::MANIFEST_FILE, name.clone()));
        for (name, path) in files {
            self.upload(dispatch_id, &name, std::fs::read(&path)?)
                .await?;
        }
        Ok(())
    }

    /// Uploads one file of a package.
    pub async fn upload(&self, dispatch_id: &str, name: &str, body: Vec<u8>) -> Result<()> {
        self.system
            .clients
            .s3
            .put_object()
            .bucket(&self.system.config.uploads_bucket)
            .key(format!(
                "{}{dispatch_id}/{name}",
                shared::manifest::INCOMING_PREFIX
            ))
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("cannot upload {name}"))?;
        Ok(())
    }

    pub fn portal(&self) -> portal::Portal {
        portal::Portal::new(&self.system.api_url)
    }
}
