//! What AWS does between the functions, done locally: long-polls each queue and calls its
//! function's handler with a real SQS event (deleting only the messages that succeeded),
//! serves the API router on a loopback port, and ticks the scheduled function.

use adapters::clients::Clients;
use anyhow::{Context, Result};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use domain::config::Config;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

use crate::deploy::Stack;

#[derive(Debug, Clone)]
pub struct Options {
    /// API port on 127.0.0.1; 0 picks a free one.
    pub api_port: u16,
    /// How often the scheduled function runs (AWS: every minute).
    pub tick_every: Duration,
    /// Seconds before a failed message is received again. AWS waits for the queue's
    /// visibility timeout; locally a short wait keeps retries quick.
    pub retry_after_secs: i32,
    /// Concurrent pollers of the send queue (the event source mapping's MaximumConcurrency);
    /// 0 leaves the send queue to the caller.
    pub senders: usize,
    /// Configuration values that replace the stack's (e.g. a faster send rate).
    pub overrides: Vec<(&'static str, String)>,
    /// Endpoint the functions call instead of the emulator's (e.g. a fault-injection proxy).
    pub endpoint: Option<String>,
    /// Signs and verifies the API's tokens (API Gateway's JWT authorizer in AWS).
    pub issuer: crate::auth::LocalIssuer,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_port: 0,
            tick_every: Duration::from_secs(5),
            retry_after_secs: 2,
            senders: 2,
            overrides: vec![],
            endpoint: None,
            issuer: crate::auth::LocalIssuer::random(),
        }
    }
}

/// The running system. Dropping it stops every task.
pub struct System {
    pub config: Config,
    pub clients: Clients,
    pub api_url: String,
    pub issuer: crate::auth::LocalIssuer,
    pub stack: Stack,
    tasks: JoinSet<()>,
}

impl System {
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(sdk: &aws_config::SdkConfig, stack: Stack, opts: Options) -> Result<System> {
    let config = stack.config(&opts.overrides)?;
    let clients = match &opts.endpoint {
        Some(endpoint) => Clients::new(&crate::emulator::sdk_config_for(endpoint).await),
        None => Clients::new(sdk),
    };
    let mut tasks = JoinSet::new();

    let validate = Arc::new(validate::Deps::new(config.clone(), &clients));
    let fanout = Arc::new(fanout::Deps::new(config.clone(), &clients));
    let send = Arc::new(send::Deps::new(config.clone(), &clients));
    let resume = Arc::new(resume::Deps::new(config.clone(), &clients));
    let receipts = Arc::new(receipts::Deps::new(config.clone(), &clients));
    let api = Arc::new(api::Deps::new(config.clone(), &clients));

    let notifications = stack.output("NotificationQueueUrl")?.to_string();
    spawn_poller(
        &mut tasks,
        &clients,
        notifications,
        opts.retry_after_secs,
        1,
        move |ev| {
            let d = validate.clone();
            async move { validate::handle(&d, ev).await }
        },
    );
    spawn_poller(
        &mut tasks,
        &clients,
        config.fanout_queue_url.clone(),
        opts.retry_after_secs,
        2,
        move |ev| {
            let d = fanout.clone();
            async move { fanout::handle(&d, ev).await }
        },
    );
    spawn_poller(
        &mut tasks,
        &clients,
        config.send_queue_url.clone(),
        opts.retry_after_secs,
        opts.senders,
        move |ev| {
            let d = send.clone();
            async move { send::handle(&d, ev).await }
        },
    );

    spawn_poller(
        &mut tasks,
        &clients,
        stack.output("ReceiptsQueueUrl")?.to_string(),
        opts.retry_after_secs,
        1,
        move |ev| {
            let d = receipts.clone();
            async move { receipts::handle(&d, ev).await }
        },
    );

    let tick = opts.tick_every;
    tasks.spawn(async move {
        let mut every = tokio::time::interval(tick);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = resume::handle(&resume, schedule_event()).await {
                tracing::error!(error = %e, "scheduled run failed");
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.api_port))
        .await
        .context("cannot bind the API port")?;
    let api_url = format!("http://{}", listener.local_addr()?);
    // Every request passes the token check first, as behind API Gateway's JWT authorizer.
    let router = api::router(api).layer(axum::middleware::from_fn_with_state(
        opts.issuer.clone(),
        crate::auth::authorize,
    ));
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok(System {
        config,
        clients,
        api_url,
        issuer: opts.issuer.clone(),
        stack,
        tasks,
    })
}

/// The event EventBridge sends for a scheduled rule.
pub fn schedule_event() -> EventBridgeEvent<serde_json::Value> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::from_value(serde_json::json!({
        "version": "0",
        "id": uuid_like(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": now,
        "region": crate::emulator::REGION,
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/resume"],
        "detail": {}
    }))
    .unwrap_or_default()
}

fn uuid_like() -> String {
    format!(
        "{:032x}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    )
}

fn spawn_poller<F, Fut>(
    tasks: &mut JoinSet<()>,
    clients: &Clients,
    queue_url: String,
    retry_after: i32,
    pollers: usize,
    handler: F,
) where
    F: Fn(SqsEvent) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<SqsBatchResponse, domain::Error>> + Send,
{
    for _ in 0..pollers {
        let sqs = clients.sqs.clone();
        let url = queue_url.clone();
        let handler = handler.clone();
        tasks.spawn(async move { poll(sqs, url, retry_after, handler).await });
    }
}

async fn poll<F, Fut>(sqs: aws_sdk_sqs::Client, url: String, retry_after: i32, handler: F)
where
    F: Fn(SqsEvent) -> Fut,
    Fut: Future<Output = Result<SqsBatchResponse, domain::Error>>,
{
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .ok()
        .and_then(|o| {
            o.attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn))
                .cloned()
        })
        .unwrap_or_default();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(queue = %url, error = %domain::error::chain(&e), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut r = SqsMessage::default();
                r.message_id = m.message_id.clone();
                r.receipt_handle = m.receipt_handle.clone();
                r.body = m.body.clone();
                r.md5_of_body = m.md5_of_body.clone();
                r.attributes = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                r.event_source = Some("aws:sqs".into());
                r.event_source_arn = Some(arn.clone());
                r.aws_region = Some(crate::emulator::REGION.into());
                r
            })
            .collect();
        let failed: HashSet<String> = match handler(event).await {
            Ok(resp) => resp
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(e) => {
                tracing::error!(queue = %url, error = %e, "handler failed; the whole batch comes again");
                messages
                    .iter()
                    .filter_map(|m| m.message_id.clone())
                    .collect()
            }
        };
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| !m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone()?)
                    .build()
                    .ok()
            })
            .collect();
        if !done.is_empty() {
            if let Err(e) = sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(done))
                .send()
                .await
            {
                tracing::warn!(queue = %url, error = %domain::error::chain(&e), "delete failed; messages come again");
            }
        }
        for m in messages
            .iter()
            .filter(|m| m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
        {
            if let Some(handle) = &m.receipt_handle {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&url)
                    .receipt_handle(handle)
                    .visibility_timeout(retry_after)
                    .send()
                    .await;
            }
        }
    }
}
