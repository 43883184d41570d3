//! Typed configuration, read once at start-up from environment variables (or any lookup, so
//! the local runtime can feed it from the deployed stack's outputs). Every problem is reported
//! at once, by variable name.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// DynamoDB table holding dispatches and recipients.
    pub table_name: String,
    /// Bucket operators upload packages to.
    pub uploads_bucket: String,
    /// Bucket for frozen packages, reports, samples and history documents.
    pub reports_bucket: String,
    /// Queue of fan-out work (one message per key shard of an approved dispatch).
    pub fanout_queue_url: String,
    /// Queue of send work (batches of recipients).
    pub send_queue_url: String,
    /// Queue of settle work: the scheduled run hands each dispatch that needs moving along
    /// to its own message there (read by the scheduled function only).
    pub settle_queue_url: Option<String>,
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2).
    pub default_phone_region: String,
    /// Emails per second all sender instances together send at most (the SES account's own
    /// rate applies when it is lower).
    pub email_rate_per_second: f64,
    /// SMS per second all sender instances together send at most.
    pub sms_rate_per_second: f64,
    /// Letters per second all sender instances together produce at most (each is typeset
    /// and written to the reports bucket).
    pub letter_rate_per_second: f64,
    /// Recipients carried by one send-queue message.
    pub recipients_per_message: usize,
    /// Key shards a dispatch's recipients are spread over.
    pub key_shards: u32,
    /// Largest list file accepted, in bytes.
    pub max_list_bytes: u64,
    /// Most data rows accepted in one list.
    pub max_rows: u64,
    /// Largest PDF accepted as a dispatch's email attachment, in bytes. Encoded for mail it
    /// grows by about 37 %; at most 25 MiB is accepted, so that every message, with a
    /// recipient's letter attached as well, stays under SES's 40 MB.
    pub email_attachment_max_bytes: u64,
    /// The API's public address (`https://…`), under which one-click unsubscribe links
    /// point. Unset: a dispatch that offers unsubscribing fails validation.
    pub public_api_url: Option<String>,
    /// How long after a send a hard bounce, a rejection or an undeliverable SMS is followed
    /// up on the recipient's next channel (the dispatch's fallback order); 0: never.
    pub fallback_within_secs: u64,
    /// How long a dispatch waits after the provider throttled it before sending continues.
    pub throttle_pause_secs: u64,
    /// A claim older than this with no recorded result is taken as a sender that died after
    /// calling the provider: the recipient becomes `unknown`.
    pub claim_expiry_secs: u64,
    /// A sending dispatch whose counters have not moved for this long is recounted from its
    /// records.
    pub stall_secs: u64,
    /// How long a dispatch waits when the account's 24-hour quota is used up.
    pub quota_recheck_secs: u64,
    /// Deliveries of a queue message before it goes to the dead-letter queue (the queues'
    /// redrive `maxReceiveCount`).
    pub max_receives: u32,
    /// SES configuration set every email is sent with, so that its event destination
    /// reports deliveries, bounces and complaints to the receipts function. Unset: no
    /// receipts for email.
    pub ses_configuration_set: Option<String>,
    /// SNS topic operators subscribe to for notifications (validation finished, approval
    /// requested, waiting for continuation, completed). Unset: notifications are only logged.
    pub operator_topic_arn: Option<String>,
    /// How the API reads its callers from the verified token's claims, and whether four
    /// eyes apply.
    pub identity: crate::identity::IdentityConfig,
}

/// Names of the variables, as set in the deployment template.
pub mod vars {
    pub const TABLE_NAME: &str = "TABLE_NAME";
    pub const UPLOADS_BUCKET: &str = "UPLOADS_BUCKET";
    pub const REPORTS_BUCKET: &str = "REPORTS_BUCKET";
    pub const FANOUT_QUEUE_URL: &str = "FANOUT_QUEUE_URL";
    pub const SEND_QUEUE_URL: &str = "SEND_QUEUE_URL";
    pub const DEFAULT_PHONE_REGION: &str = "DEFAULT_PHONE_REGION";
    pub const EMAIL_RATE_PER_SECOND: &str = "EMAIL_RATE_PER_SECOND";
    pub const SMS_RATE_PER_SECOND: &str = "SMS_RATE_PER_SECOND";
    pub const LETTER_RATE_PER_SECOND: &str = "LETTER_RATE_PER_SECOND";
    pub const RECIPIENTS_PER_MESSAGE: &str = "RECIPIENTS_PER_MESSAGE";
    pub const KEY_SHARDS: &str = "KEY_SHARDS";
    pub const MAX_LIST_BYTES: &str = "MAX_LIST_BYTES";
    pub const MAX_ROWS: &str = "MAX_ROWS";
    pub const THROTTLE_PAUSE_SECS: &str = "THROTTLE_PAUSE_SECS";
    pub const CLAIM_EXPIRY_SECS: &str = "CLAIM_EXPIRY_SECS";
    pub const STALL_SECS: &str = "STALL_SECS";
    pub const QUOTA_RECHECK_SECS: &str = "QUOTA_RECHECK_SECS";
    pub const MAX_RECEIVES: &str = "MAX_RECEIVES";
    pub const SES_CONFIGURATION_SET: &str = "SES_CONFIGURATION_SET";
    pub const ID_CLAIM: &str = "ID_CLAIM";
    pub const ROLES_CLAIM: &str = "ROLES_CLAIM";
    pub const FOUR_EYES: &str = "FOUR_EYES";
    pub const OPERATOR_TOPIC_ARN: &str = "OPERATOR_TOPIC_ARN";
    pub const SETTLE_QUEUE_URL: &str = "SETTLE_QUEUE_URL";
    pub const EMAIL_ATTACHMENT_MAX_BYTES: &str = "EMAIL_ATTACHMENT_MAX_BYTES";
    pub const PUBLIC_API_URL: &str = "PUBLIC_API_URL";
    pub const FALLBACK_WITHIN_SECS: &str = "FALLBACK_WITHIN_SECS";
    /// Every variable the configuration reads.
    pub const ALL: [&str; 27] = [
        TABLE_NAME,
        UPLOADS_BUCKET,
        REPORTS_BUCKET,
        FANOUT_QUEUE_URL,
        SEND_QUEUE_URL,
        DEFAULT_PHONE_REGION,
        EMAIL_RATE_PER_SECOND,
        SMS_RATE_PER_SECOND,
        LETTER_RATE_PER_SECOND,
        RECIPIENTS_PER_MESSAGE,
        KEY_SHARDS,
        MAX_LIST_BYTES,
        MAX_ROWS,
        THROTTLE_PAUSE_SECS,
        CLAIM_EXPIRY_SECS,
        STALL_SECS,
        QUOTA_RECHECK_SECS,
        MAX_RECEIVES,
        SES_CONFIGURATION_SET,
        ID_CLAIM,
        ROLES_CLAIM,
        FOUR_EYES,
        OPERATOR_TOPIC_ARN,
        SETTLE_QUEUE_URL,
        EMAIL_ATTACHMENT_MAX_BYTES,
        PUBLIC_API_URL,
        FALLBACK_WITHIN_SECS,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration is not usable: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn required(&mut self, name: &str) -> String {
        match (self.lookup)(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => v.trim().to_string(),
            None => {
                self.problems.push(format!("{name} is not set"));
                String::new()
            }
        }
    }

    fn number<T: FromStr + PartialOrd + Copy + fmt::Display>(
        &mut self,
        name: &str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        match (self.lookup)(name).filter(|v| !v.trim().is_empty()) {
            None => default,
            Some(v) => match v.trim().parse::<T>() {
                Ok(n) if n >= min && n <= max => n,
                _ => {
                    self.problems.push(format!(
                        "{name} must be a number from {min} to {max}, got '{v}'"
                    ));
                    default
                }
            },
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn text(&mut self, name: &str, default: &str) -> String {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        match (self.lookup)(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if v.is_empty() => default,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                self.problems
                    .push(format!("{name} must be true or false, got '{v}'"));
                default
            }
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup<F: Fn(&str) -> Option<String>>(lookup: &F) -> Result<Config, ConfigError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let region = (r.lookup)(vars::DEFAULT_PHONE_REGION).unwrap_or_else(|| "GB".into());
        if region.len() != 2 || !region.chars().all(|c| c.is_ascii_alphabetic()) {
            r.problems.push(format!(
                "{} must be a two-letter country code, got '{region}'",
                vars::DEFAULT_PHONE_REGION
            ));
        }
        let c = Config {
            table_name: r.required(vars::TABLE_NAME),
            uploads_bucket: r.required(vars::UPLOADS_BUCKET),
            reports_bucket: r.required(vars::REPORTS_BUCKET),
            fanout_queue_url: r.required(vars::FANOUT_QUEUE_URL),
            send_queue_url: r.required(vars::SEND_QUEUE_URL),
            fallback_within_secs: r.number(vars::FALLBACK_WITHIN_SECS, 72 * 3600, 0, 30 * 86_400),
            public_api_url: (r.lookup)(vars::PUBLIC_API_URL)
                .map(|v| v.trim().trim_end_matches('/').to_string())
                .filter(|v| !v.is_empty()),
            settle_queue_url: (r.lookup)(vars::SETTLE_QUEUE_URL)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            default_phone_region: region.to_ascii_uppercase(),
            email_rate_per_second: r.number(vars::EMAIL_RATE_PER_SECOND, 14.0, 0.1, 100_000.0),
            sms_rate_per_second: r.number(vars::SMS_RATE_PER_SECOND, 20.0, 0.1, 100_000.0),
            letter_rate_per_second: r.number(vars::LETTER_RATE_PER_SECOND, 20.0, 0.1, 10_000.0),
            recipients_per_message: r.number(
                vars::RECIPIENTS_PER_MESSAGE,
                50,
                1,
                crate::limits::MAX_RECIPIENTS_PER_WRITE,
            ),
            key_shards: r.number(vars::KEY_SHARDS, 16, 1, 1000),
            max_list_bytes: r.number(vars::MAX_LIST_BYTES, 512 * 1024 * 1024, 1, u64::MAX),
            max_rows: r.number(vars::MAX_ROWS, 1_000_000, 1, u64::MAX),
            email_attachment_max_bytes: r.number(
                vars::EMAIL_ATTACHMENT_MAX_BYTES,
                crate::limits::DEFAULT_ATTACHMENT_BYTES,
                1,
                crate::limits::MAX_ATTACHMENT_BYTES,
            ),
            throttle_pause_secs: r.number(vars::THROTTLE_PAUSE_SECS, 60, 1, 86_400),
            claim_expiry_secs: r.number(vars::CLAIM_EXPIRY_SECS, 900, 1, 86_400),
            stall_secs: r.number(vars::STALL_SECS, 120, 1, 86_400),
            quota_recheck_secs: r.number(vars::QUOTA_RECHECK_SECS, 3600, 1, 86_400),
            max_receives: r.number(vars::MAX_RECEIVES, 5, 1, 1000),
            ses_configuration_set: (r.lookup)(vars::SES_CONFIGURATION_SET)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            operator_topic_arn: (r.lookup)(vars::OPERATOR_TOPIC_ARN)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            identity: crate::identity::IdentityConfig {
                id_claim: r.text(vars::ID_CLAIM, "sub"),
                roles_claim: r.text(vars::ROLES_CLAIM, "roles"),
                four_eyes: r.flag(vars::FOUR_EYES, true),
            },
        };
        if r.problems.is_empty() {
            Ok(c)
        } else {
            Err(ConfigError(r.problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn full() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (vars::TABLE_NAME, "t"),
            (vars::UPLOADS_BUCKET, "u"),
            (vars::REPORTS_BUCKET, "r"),
            (vars::FANOUT_QUEUE_URL, "f"),
            (vars::SEND_QUEUE_URL, "s"),
            (vars::DEFAULT_PHONE_REGION, "dk"),
        ])
    }

    #[test]
    fn reads_required_values_and_defaults() {
        let env = full();
        let c = Config::from_lookup(&|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.table_name, "t");
        assert_eq!(c.default_phone_region, "DK");
        assert_eq!(c.recipients_per_message, 50);
        assert_eq!(c.email_rate_per_second, 14.0);
        assert_eq!(c.identity, crate::identity::IdentityConfig::default());
        assert!(c.identity.four_eyes, "four eyes unless switched off");
    }

    #[test]
    fn reports_every_problem_by_name() {
        let mut env = full();
        env.remove(vars::TABLE_NAME);
        env.insert(vars::KEY_SHARDS, "0");
        env.insert(vars::SMS_RATE_PER_SECOND, "fast");
        env.insert(vars::FOUR_EYES, "maybe");
        let e = Config::from_lookup(&|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        assert!(e.to_string().contains("FOUR_EYES must be true or false"));
        assert!(e.to_string().contains("TABLE_NAME is not set"));
        assert!(e
            .to_string()
            .contains("KEY_SHARDS must be a number from 1 to 1000, got '0'"));
        assert!(e.to_string().contains("SMS_RATE_PER_SECOND"));
    }
}
