//! S3 documents: reading uploads, writing the frozen package, report, sample and history.

use aws_sdk_s3::primitives::ByteStream;
use documents::keys;
use domain::error::{Error, Result};
use domain::manifest::Manifest;
use intake::template::TemplateSource;
use serde::{Deserialize, Serialize};

/// Characters escaped in a CopyObject source (everything but unreserved ones and `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What was validated and what will be sent: the manifest, the template texts and the
/// hashes of the list and templates. Written once per validation and read by the senders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub dispatch_id: String,
    pub manifest: Manifest,
    pub template: TemplateSource,
    pub list_key: String,
    pub list_sha256: String,
    pub template_sha256: String,
}

/// A list downloaded to local disk (the function's temporary storage), never held in memory.
#[derive(Debug)]
pub struct Downloaded {
    pub file: std::fs::File,
    pub size: u64,
    /// SHA-256 of the bytes, in hex: the frozen package names the list by it.
    pub sha256: String,
}

/// Outcome of downloading an object that may be missing.
pub type FetchedFile = Fetched<Downloaded>;

/// Outcome of reading an object that may be missing: its bytes, or what was made of them.
#[derive(Debug)]
pub enum Fetched<T = Vec<u8>> {
    Found(T),
    Missing,
    /// Larger than the limit given; the size is reported.
    TooLarge(u64),
}

#[derive(Clone, Debug)]
pub struct Documents {
    s3: aws_sdk_s3::Client,
    pub uploads_bucket: String,
    pub reports_bucket: String,
}

impl Documents {
    /// The buckets the configuration names.
    pub fn from_config(
        clients: &crate::clients::Clients,
        config: &domain::config::Config,
    ) -> Documents {
        Documents::new(
            clients.s3.clone(),
            &config.uploads_bucket,
            &config.reports_bucket,
        )
    }

    pub fn new(
        s3: aws_sdk_s3::Client,
        uploads_bucket: impl Into<String>,
        reports_bucket: impl Into<String>,
    ) -> Documents {
        Documents {
            s3,
            uploads_bucket: uploads_bucket.into(),
            reports_bucket: reports_bucket.into(),
        }
    }

    /// Starts reading an object: missing, larger than `max_bytes` (by its length), or its body.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<Fetched<aws_sdk_s3::operation::get_object::GetObjectOutput>> {
        let out = match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Fetched::Missing)
            }
            Err(e) => return Err(Error::aws("GetObject")(e)),
        };
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Ok(Fetched::TooLarge(size));
        }
        Ok(Fetched::Found(out))
    }

    /// Reads an object, refusing to load one larger than `max_bytes`.
    pub async fn fetch(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Fetched> {
        let out = match self.get(bucket, key, max_bytes).await? {
            Fetched::Found(o) => o,
            Fetched::Missing => return Ok(Fetched::Missing),
            Fetched::TooLarge(size) => return Ok(Fetched::TooLarge(size)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(Error::aws("GetObject body"))?
            .into_bytes()
            .to_vec();
        Ok(Fetched::Found(body))
    }

    /// Downloads an object to an anonymous temporary file (deleted when dropped), hashing it
    /// on the way; an object larger than `max_bytes` is refused before its body is read.
    pub async fn fetch_to_file(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<FetchedFile> {
        use sha2::Digest;
        use std::io::{Seek, Write};
        let mut out = match self.get(bucket, key, max_bytes).await? {
            Fetched::Found(o) => o,
            Fetched::Missing => return Ok(Fetched::Missing),
            Fetched::TooLarge(size) => return Ok(Fetched::TooLarge(size)),
        };
        let local = |e: std::io::Error| Error::Aws {
            op: "GetObject to local disk",
            source: Box::new(e),
        };
        let file = tempfile::tempfile().map_err(local)?;
        let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hash = sha2::Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = out
            .body
            .try_next()
            .await
            .map_err(Error::aws("GetObject body"))?
        {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Ok(Fetched::TooLarge(written));
            }
            hash.update(&chunk);
            writer.write_all(&chunk).map_err(local)?;
        }
        let mut file = writer.into_inner().map_err(|e| local(e.into_error()))?;
        file.rewind().map_err(local)?;
        Ok(Fetched::Found(Downloaded {
            file,
            size: written,
            sha256: hex::encode(hash.finalize()),
        }))
    }

    /// Uploads a local file to the reports bucket.
    pub async fn put_report_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<()> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(Error::aws("PutObject body"))?;
        self.s3
            .put_object()
            .bucket(&self.reports_bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(Error::aws("PutObject"))?;
        Ok(())
    }

    /// Copies a document of the reports bucket; a missing source is no error.
    pub async fn copy_report_document(&self, from: &str, to: &str) -> Result<bool> {
        let source = format!("{}/{}", self.reports_bucket, from);
        match self
            .s3
            .copy_object()
            .bucket(&self.reports_bucket)
            .key(to)
            .copy_source(percent_encoding::utf8_percent_encode(&source, COPY_SOURCE).to_string())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.meta().code() == Some("NoSuchKey")) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::aws("CopyObject")(e)),
        }
    }

    /// Objects under `prefix` in the uploads bucket written after `since` (RFC 3339), with
    /// their times: a package folder that changed after its validation.
    pub async fn uploaded_after(&self, prefix: &str, since: &str) -> Result<Vec<(String, String)>> {
        let since =
            time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
                .map_err(|e| Error::Malformed(format!("time '{since}': {e}")))?;
        // S3 keeps whole seconds: an object of the same second as the upload is not newer.
        let since = since.unix_timestamp();
        let mut out = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.uploads_bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Error::aws("ListObjectsV2"))?;
            for o in page.contents() {
                if let (Some(key), Some(at)) = (o.key(), o.last_modified()) {
                    if at.secs() > since {
                        let when = at
                            .fmt(aws_smithy_types::date_time::Format::DateTime)
                            .unwrap_or_default();
                        out.push((key.to_string(), when));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes every document of the reports bucket under `prefix`; how many there were.
    pub async fn delete_report_documents(&self, prefix: &str) -> Result<usize> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.reports_bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Error::aws("ListObjectsV2"))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        for key in &keys {
            self.s3
                .delete_object()
                .bucket(&self.reports_bucket)
                .key(key)
                .send()
                .await
                .map_err(Error::aws("DeleteObject"))?;
        }
        Ok(keys.len())
    }

    /// Reads a document of the reports bucket; `None` when it does not exist.
    pub async fn report_document(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.fetch(&self.reports_bucket, key, u64::MAX).await? {
            Fetched::Found(b) => Ok(Some(b)),
            _ => Ok(None),
        }
    }

    pub async fn put_report_document(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.reports_bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(Error::aws("PutObject"))?;
        Ok(())
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).map_err(|e| Error::Malformed(e.to_string()))?;
        self.put_report_document(key, body, "application/json")
            .await
    }

    /// A link to a document of the reports bucket that works without credentials for
    /// `valid_for`, offered to the browser as a file named `filename`.
    pub async fn report_link(
        &self,
        key: &str,
        filename: &str,
        valid_for: std::time::Duration,
    ) -> Result<String> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(valid_for)
            .map_err(|e| Error::Malformed(format!("link lifetime: {e}")))?;
        let request = self
            .s3
            .get_object()
            .bucket(&self.reports_bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .presigned(config)
            .await
            .map_err(Error::aws("GetObject presign"))?;
        Ok(request.uri().to_string())
    }

    /// Writes an object of the uploads bucket again with the same content, so that its
    /// upload notification comes again (the repeat of a validation). False when the object
    /// does not exist.
    pub async fn upload_again(&self, key: &str) -> Result<bool> {
        let head = match self
            .s3
            .head_object()
            .bucket(&self.uploads_bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => h,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(false),
            Err(e) => return Err(Error::aws("HeadObject")(e)),
        };
        let source = percent_encoding::utf8_percent_encode(
            &format!("{}/{key}", self.uploads_bucket),
            COPY_SOURCE,
        )
        .to_string();
        // A copy onto itself must change something: the metadata, which says when.
        self.s3
            .copy_object()
            .bucket(&self.uploads_bucket)
            .key(key)
            .copy_source(source)
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .set_content_type(head.content_type().map(str::to_string))
            .set_metadata(head.metadata().cloned())
            .metadata("repeated-at", domain::model::now_rfc3339())
            .send()
            .await
            .map_err(Error::aws("CopyObject"))?;
        Ok(true)
    }

    pub async fn package(&self, dispatch_id: &str) -> Result<Package> {
        let key = keys::package(dispatch_id);
        let bytes = self
            .report_document(&key)
            .await?
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Malformed(format!("{key}: {e}")))
    }
}

#[async_trait::async_trait]
impl engine::ports::ReportDocuments for Documents {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        self.put_report_document(key, body, content_type).await
    }

    async fn put_file(&self, key: &str, path: &std::path::Path, content_type: &str) -> Result<()> {
        self.put_report_file(key, path, content_type).await
    }
}

#[async_trait::async_trait]
impl engine::ports::Packages for Documents {
    async fn template(&self, dispatch_id: &str) -> Result<TemplateSource> {
        Ok(self.package(dispatch_id).await?.template)
    }

    async fn file(&self, file: &intake::template::FrozenFile) -> Result<Vec<u8>> {
        use sha2::Digest;
        let bucket = self.reports_bucket.clone();
        let bytes = match self.fetch(&bucket, &file.key, file.bytes).await? {
            Fetched::Found(b) => b,
            Fetched::Missing => return Err(Error::NotFound(file.key.clone())),
            Fetched::TooLarge(size) => {
                return Err(Error::Malformed(format!(
                    "{} is {size} bytes, not the {} that were approved",
                    file.key, file.bytes
                )))
            }
        };
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        if sha256 != file.sha256 {
            return Err(Error::Malformed(format!(
                "{} is not the file that was approved (SHA-256 {sha256}, approved {})",
                file.key, file.sha256
            )));
        }
        Ok(bytes)
    }
}
