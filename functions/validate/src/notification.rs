//! The bucket notification that starts a validation, and what it says of the upload.

/// The part of an S3 event notification the validator reads. Read leniently: only the bucket
/// and key are needed, and emitters differ in the other fields they include.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Notification {
    #[serde(rename = "Records", default)]
    pub(crate) records: Vec<NotificationRecord>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct NotificationRecord {
    pub(crate) s3: NotificationS3,
    /// Who uploaded the manifest (the IAM principal), when the emitter says.
    #[serde(rename = "userIdentity", default)]
    pub(crate) user_identity: Option<UserIdentity>,
    /// When the manifest was uploaded.
    #[serde(rename = "eventTime", default)]
    pub(crate) event_time: Option<String>,
}

/// Who uploaded a package's manifest, and when.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upload<'a> {
    pub uploader: Option<&'a str>,
    pub at: Option<&'a str>,
}

/// Whether an upload at `at` is newer than the one a dispatch was validated from. Without
/// times to compare, it is taken as new.
pub(crate) fn is_newer(at: Option<&str>, validated: Option<&str>) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (at.and_then(parse), validated.and_then(parse)) {
        (Some(a), Some(v)) => a > v,
        _ => true,
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct UserIdentity {
    #[serde(rename = "principalId", default)]
    pub(crate) principal_id: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct NotificationS3 {
    pub(crate) bucket: Named,
    pub(crate) object: Keyed,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Named {
    pub(crate) name: String,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Keyed {
    pub(crate) key: String,
}

/// Keys in notifications are URL-encoded with `+` for spaces.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}
