//! The list with each recipient's status, written to the reports bucket: the validated list
//! read again from the uploads bucket (checked to be the one validated), the statuses read a
//! page of records at a time into a [`StatusBook`] on temporary disk, the download written on
//! temporary disk and uploaded from there. Memory holds a page and one bucket of statuses,
//! however long the list.

use crate::dynamodb::Store;
use crate::s3::{Documents, Fetched};
use documents::download::{self, Format, StatusBook};
use documents::keys;
use domain::model::Dispatch;
use domain::{Error, Result};

/// Records read per page.
const PAGE: i32 = 1000;

/// Why there is no download to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The dispatch has no validated list yet.
    NoList,
    /// The validated list is no longer in the package folder.
    Gone(String),
    /// The list in the package folder is not the one validated.
    Changed,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::NoList => "there is no validated list to download yet".into(),
            Refusal::Gone(key) => {
                format!("the validated list {key} is no longer in the package folder")
            }
            Refusal::Changed => "the list in the package folder is not the one validated; repeat the validation first".into(),
        }
    }
}

/// A download written to the reports bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub key: String,
    /// The file name a link gives it.
    pub filename: String,
    pub rows: u64,
    /// Records read for their statuses.
    pub records: u64,
}

/// Whether `d` has a validated list to download.
pub fn has_list(d: &Dispatch) -> bool {
    d.package_key.is_some() && d.list_sha256.is_some()
}

/// Writes the download of `d` in `format`.
pub async fn write(
    store: &Store,
    docs: &Documents,
    d: &Dispatch,
    format: Format,
    max_list_bytes: u64,
) -> Result<std::result::Result<Written, Refusal>> {
    if !has_list(d) {
        return Ok(Err(Refusal::NoList));
    }
    let package = docs.package(&d.id).await?;
    let list = match docs
        .fetch_to_file(&docs.uploads_bucket, &package.list_key, max_list_bytes)
        .await?
    {
        Fetched::Found(f) => f,
        _ => return Ok(Err(Refusal::Gone(package.list_key.clone()))),
    };
    if Some(&list.sha256) != d.list_sha256.as_ref() {
        return Ok(Err(Refusal::Changed));
    }
    let disk = |e: std::io::Error| Error::Malformed(format!("temporary disk: {e}"));
    let mut book = StatusBook::new().map_err(disk)?;
    let mut records = 0u64;
    for shard in 0..d.shards {
        let mut after = None;
        loop {
            let page = store.query_shard(&d.id, shard, None, after, PAGE).await?;
            for (_, r) in &page.recipients {
                book.add(r).map_err(disk)?;
            }
            records += page.recipients.len() as u64;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let manifest = package.manifest;
    let id = d.id.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut reader =
            intake::list::ListReader::open_listed_as_uploaded(&manifest, Box::new(list.file))
                .map_err(|e| download::DownloadError::Read(e.to_string()))?;
        download::write(&mut reader, &mut book, format)
    })
    .await
    .map_err(|e| Error::Malformed(format!("the download writer stopped: {e}")))?
    .map_err(|e| Error::Malformed(format!("download of {id}: {e}")))?;
    if written.unmatched > 0 {
        tracing::warn!(dispatch = %d.id, unmatched = written.unmatched, "rows without a recorded recipient");
    }
    let key = keys::download(&d.id, format.extension());
    docs.put_report_file(&key, written.file.path(), format.content_type())
        .await?;
    Ok(Ok(Written {
        key,
        filename: format!("{}-status.{}", d.id, format.extension()),
        rows: written.rows,
        records,
    }))
}
