//! One SDK configuration and one set of clients per process, built at start-up. The endpoint
//! comes from the standard AWS settings (`AWS_ENDPOINT_URL` and friends), nothing else.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::time::Duration;

/// Loads the shared SDK configuration with attempt and operation timeouts on every call.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_from(aws_config::defaults(BehaviorVersion::latest())).await
}

/// The same timeouts and retries on a loader the caller has prepared (region, credentials).
pub async fn sdk_config_from(loader: aws_config::ConfigLoader) -> SdkConfig {
    loader
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// The clients every function uses.
#[derive(Clone, Debug)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// SES v2 with a single attempt: a throttle must pause the dispatch, not be resent.
    pub sesv2: aws_sdk_sesv2::Client,
    /// SNS with a single attempt, for the same reason.
    pub sns: aws_sdk_sns::Client,
}

impl Clients {
    pub fn new(conf: &SdkConfig) -> Clients {
        let single = RetryConfig::standard().with_max_attempts(1);
        let s3 = aws_sdk_s3::config::Builder::from(conf)
            .force_path_style(true)
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            dynamodb: aws_sdk_dynamodb::Client::new(conf),
            sqs: aws_sdk_sqs::Client::new(conf),
            sesv2: aws_sdk_sesv2::Client::from_conf(
                aws_sdk_sesv2::config::Builder::from(conf)
                    .retry_config(single.clone())
                    .build(),
            ),
            sns: aws_sdk_sns::Client::from_conf(
                aws_sdk_sns::config::Builder::from(conf)
                    .retry_config(single)
                    .build(),
            ),
        }
    }
}

/// Logging set up once per process: JSON lines in Lambda (where `AWS_LAMBDA_FUNCTION_NAME`
/// is set), readable lines elsewhere. `RUST_LOG` filters as usual.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder
            .json()
            .with_current_span(false)
            .without_time()
            .with_target(false)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
    // A second call (tests, the local runtime) keeps the first subscriber.
    let _ = result;
}
