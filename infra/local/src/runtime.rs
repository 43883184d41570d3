//! What AWS does between the functions, done locally: long-polls each queue and calls its
//! function's handler with a real SQS event (deleting only the messages that succeeded),
//! serves the API router on a loopback port, and ticks the scheduled function.
//!
//! Lambda's contract is kept as the template declares it: each function runs under its own
//! role, gets its trigger's batch size with at most its `MaximumConcurrency` invocations at
//! once, and each invocation gets its function's `Timeout` as its deadline and is abandoned
//! there (nothing after it runs; its messages come again after the queue's visibility
//! timeout). The API answers as API Gateway does past 29 s, for a request body over 10 MB
//! and for a response over 6 MB.

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
    /// Concurrent pollers of the send queue in place of the trigger's MaximumConcurrency;
    /// `Some(0)` leaves the send queue to the caller.
    pub senders: Option<usize>,
    /// Function timeouts in place of the template's, by logical id (`SendFunction`).
    pub timeouts: Vec<(&'static str, Duration)>,
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
            senders: None,
            timeouts: vec![],
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
    /// Invocations so far and those abandoned at their deadline, by function.
    pub invocations: Arc<Invocations>,
    /// Where the sender's embedded-metric lines go (CloudWatch's part in AWS).
    pub metrics_file: std::path::PathBuf,
    /// Each function's clients, under its own role, by its logical id.
    functions: std::collections::HashMap<&'static str, Clients>,
    tasks: JoinSet<()>,
}

/// Invocations made and invocations that ran past their deadline, by function.
#[derive(Debug, Default)]
pub struct Invocations {
    counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, FunctionRuns>>,
}

/// One function's invocations so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct FunctionRuns {
    pub invocations: u64,
    pub timed_out: u64,
    /// The longest invocation.
    pub longest: Duration,
    /// The most memory one invocation held at once, in bytes ([`crate::memory`]; 0 unless a
    /// bench installed the counting allocator).
    pub peak_bytes: u64,
}

impl Invocations {
    fn count(&self, function: &'static str, timed_out: bool, took: Duration, peak_bytes: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = counts.entry(function).or_default();
        entry.invocations += 1;
        entry.timed_out += timed_out as u64;
        entry.longest = entry.longest.max(took);
        entry.peak_bytes = entry.peak_bytes.max(peak_bytes);
    }

    /// (invocations, of which timed out) of a function so far.
    pub fn of(&self, function: &str) -> (u64, u64) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(function)
            .map_or((0, 0), |r| (r.invocations, r.timed_out))
    }

    /// Every function's invocations so far, by logical id.
    pub fn all(&self) -> std::collections::BTreeMap<&'static str, FunctionRuns> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What Lambda holds an invocation of one function to.
#[derive(Debug, Clone)]
struct Contract {
    function: &'static str,
    timeout: Duration,
    batch_size: i32,
    concurrency: usize,
}

impl Contract {
    fn of(stack: &Stack, function: &'static str, opts: &Options) -> Result<Contract> {
        let declared = stack.function(function)?;
        let timeout = opts
            .timeouts
            .iter()
            .find(|(f, _)| *f == function)
            .map_or(declared.timeout, |(_, t)| *t);
        Ok(Contract {
            function,
            timeout,
            batch_size: declared.batch_size,
            concurrency: declared.concurrency,
        })
    }

    /// Runs one invocation to its deadline; `None` when it ran past it and was abandoned.
    async fn invoke<T, F: Future<Output = T>>(
        &self,
        invocations: &Invocations,
        run: impl FnOnce(domain::Deadline) -> F,
    ) -> Option<T> {
        let deadline = domain::Deadline::after(self.timeout);
        let tag = crate::memory::begin();
        let started = tokio::time::Instant::now();
        let out =
            tokio::time::timeout(self.timeout, crate::memory::Tagged::new(tag, run(deadline)))
                .await
                .ok();
        invocations.count(
            self.function,
            out.is_none(),
            started.elapsed(),
            crate::memory::peak(tag),
        );
        if out.is_none() {
            tracing::error!(
                function = self.function,
                timeout_secs = self.timeout.as_secs_f64(),
                "invocation timed out; abandoned, as Lambda ends it"
            );
        }
        out
    }
}

impl System {
    /// The clients a function runs with (by its logical id, `SendFunction`): its role's.
    pub fn clients_of(&self, function: &str) -> Option<&Clients> {
        self.functions.get(function)
    }

    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(sdk: &aws_config::SdkConfig, stack: Stack, opts: Options) -> Result<System> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.api_port))
        .await
        .context("cannot bind the API port")?;
    let api_url = format!("http://{}", listener.local_addr()?);
    // The links in emails (unsubscribe) point at this API, as at API Gateway's on AWS.
    let mut overrides = opts.overrides.clone();
    if !overrides
        .iter()
        .any(|(k, _)| *k == domain::config::vars::PUBLIC_API_URL)
    {
        overrides.push((domain::config::vars::PUBLIC_API_URL, api_url.clone()));
    }
    let config = stack.config(&overrides)?;
    // The functions' calls go where the administrator's go, or through the given endpoint
    // (a fault proxy). The endpoint is left to the SDK's standard settings otherwise, so
    // per-service endpoints (`AWS_ENDPOINT_URL_DYNAMODB`) work with an external emulator.
    let base = match &opts.endpoint {
        Some(endpoint) => sdk.to_builder().endpoint_url(endpoint).build(),
        None => sdk.clone(),
    };
    // The administrator's clients, for the callers' set-up and inspection.
    let clients = Clients::new(&base);
    // Each function's own clients, under its role from the template.
    let as_function = |function: &'static str| {
        let base = base.clone();
        let stack = &stack;
        async move {
            let role = stack.role_of(function)?;
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name(function)
                .configure(sdk)
                .build()
                .await;
            let credentials = aws_sdk_s3::config::SharedCredentialsProvider::new(provider);
            Ok::<Clients, anyhow::Error>(Clients::new(
                &base.to_builder().credentials_provider(credentials).build(),
            ))
        }
    };
    let validate_clients = as_function("ValidateFunction").await?;
    let fanout_clients = as_function("FanoutFunction").await?;
    let send_clients = as_function("SendFunction").await?;
    let resume_clients = as_function("ResumeFunction").await?;
    let receipts_clients = as_function("ReceiptsFunction").await?;
    let api_clients = as_function("ApiFunction").await?;
    let mut tasks = JoinSet::new();

    let validate = Arc::new(validate::Deps::new(config.clone(), &validate_clients));
    let fanout = Arc::new(fanout::Deps::new(config.clone(), &fanout_clients));
    // CloudWatch's part: the sender's embedded-metric lines go to a file of this stack's.
    let metrics_file = crate::emulator::repo_root()
        .join(".local/metrics")
        .join(format!("{}.emf.log", stack.name));
    if let Some(dir) = metrics_file.parent() {
        std::fs::create_dir_all(dir).context("cannot make the metrics folder")?;
    }
    let mut send_ports = adapters::wiring::send_ports(&send_clients, &config);
    send_ports.metrics = Arc::new(adapters::metrics::EmfMetrics::to_file(
        "send",
        metrics_file.clone(),
    ));
    let send = Arc::new(send::Deps::on(send_ports, &config));
    let resume = Arc::new(resume::Deps::new(config.clone(), &resume_clients));
    let receipts = Arc::new(receipts::Deps::new(config.clone(), &receipts_clients));
    let api = Arc::new(api::Deps::new(config.clone(), &api_clients));

    let invocations = Arc::new(Invocations::default());
    let contract = |function| Contract::of(&stack, function, &opts);
    let notifications = stack.output("NotificationQueueUrl")?.to_string();
    spawn_poller(
        &mut tasks,
        (&validate_clients, &clients),
        notifications,
        opts.retry_after_secs,
        contract("ValidateFunction")?,
        &invocations,
        move |ev, _deadline| {
            let d = validate.clone();
            async move { validate::handle(&d, ev).await }
        },
    );
    spawn_poller(
        &mut tasks,
        (&fanout_clients, &clients),
        config.fanout_queue_url.clone(),
        opts.retry_after_secs,
        contract("FanoutFunction")?,
        &invocations,
        move |ev, deadline| {
            let d = fanout.clone();
            async move { fanout::handle(&d, ev, deadline).await }
        },
    );
    let mut senders = contract("SendFunction")?;
    if let Some(n) = opts.senders {
        senders.concurrency = n;
    }
    spawn_poller(
        &mut tasks,
        (&send_clients, &clients),
        config.send_queue_url.clone(),
        opts.retry_after_secs,
        senders,
        &invocations,
        move |ev, deadline| {
            let d = send.clone();
            async move { send::handle(&d, ev, deadline).await }
        },
    );

    spawn_poller(
        &mut tasks,
        (&receipts_clients, &clients),
        stack.output("ReceiptsQueueUrl")?.to_string(),
        opts.retry_after_secs,
        contract("ReceiptsFunction")?,
        &invocations,
        move |ev, _deadline| {
            let d = receipts.clone();
            async move { receipts::handle(&d, ev).await }
        },
    );

    let settler = resume.clone();
    spawn_poller(
        &mut tasks,
        (&resume_clients, &clients),
        stack.output("SettleQueueUrl")?.to_string(),
        opts.retry_after_secs,
        contract("ResumeFunction")?,
        &invocations,
        move |ev, deadline| {
            let d = settler.clone();
            async move { resume::settle(&d, ev, deadline).await }
        },
    );

    let tick = opts.tick_every;
    let scheduled = contract("ResumeFunction")?;
    let counted = invocations.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(tick);
        every.tick().await;
        loop {
            every.tick().await;
            let run = scheduled
                .invoke(&counted, |deadline| {
                    resume::handle(&resume, schedule_event(), deadline)
                })
                .await;
            if let Some(Err(e)) = run {
                tracing::error!(error = %e, "scheduled run failed");
            }
        }
    });

    // Every request passes the token check first, as behind API Gateway's JWT authorizer.
    let router = api::router(api)
        // Each request the function itself serves is one invocation of it.
        .layer(axum::middleware::from_fn_with_state(
            invocations.clone(),
            api_invocation,
        ))
        .layer(axum::middleware::from_fn_with_state(
            crate::auth::Authorizer {
                issuer: opts.issuer.clone(),
                public: stack.public_routes.clone(),
            },
            crate::auth::authorize,
        ))
        // Outermost, as API Gateway is: its limits apply before the authorizer runs.
        .layer(axum::middleware::from_fn(crate::gateway::limits));
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
        invocations,
        metrics_file,
        functions: [
            ("ValidateFunction", validate_clients),
            ("FanoutFunction", fanout_clients),
            ("SendFunction", send_clients),
            ("ResumeFunction", resume_clients),
            ("ReceiptsFunction", receipts_clients),
            ("ApiFunction", api_clients),
        ]
        .into_iter()
        .collect(),
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

/// Pollers of one function's queue. As Lambda's event source mapping, a few pollers receive
/// batches and invoke the function for each, up to the trigger's `MaximumConcurrency` at once.
/// (A poller per concurrent invocation would have dozens of long polls spinning in the
/// emulator.)
const POLLERS: usize = 4;

#[allow(clippy::too_many_arguments)]
fn spawn_poller<F, Fut>(
    tasks: &mut JoinSet<()>,
    (clients, admin): (&Clients, &Clients),
    queue_url: String,
    retry_after: i32,
    contract: Contract,
    invocations: &Arc<Invocations>,
    handler: F,
) where
    F: Fn(SqsEvent, domain::Deadline) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<SqsBatchResponse, domain::Error>> + Send,
{
    let running = Arc::new(tokio::sync::Semaphore::new(contract.concurrency));
    for _ in 0..contract.concurrency.min(POLLERS) {
        let queue = Queue {
            sqs: clients.sqs.clone(),
            admin: admin.sqs.clone(),
            url: queue_url.clone(),
            retry_after,
        };
        let handler = handler.clone();
        let contract = contract.clone();
        let invocations = invocations.clone();
        let running = running.clone();
        tasks.spawn(async move { poll(queue, contract, invocations, running, handler).await });
    }
}

/// A function's queue, as its poller sees it.
#[derive(Clone)]
struct Queue {
    sqs: aws_sdk_sqs::Client,
    admin: aws_sdk_sqs::Client,
    url: String,
    retry_after: i32,
}

async fn poll<F, Fut>(
    queue: Queue,
    contract: Contract,
    invocations: Arc<Invocations>,
    running: Arc<tokio::sync::Semaphore>,
    handler: F,
) where
    F: Fn(SqsEvent, domain::Deadline) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<SqsBatchResponse, domain::Error>> + Send,
{
    let Queue { sqs, url, .. } = &queue;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(url)
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
    // Invocations this poller started; they end with it (when the system stops).
    let mut started = JoinSet::new();
    loop {
        while started.try_join_next().is_some() {}
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(contract.batch_size.clamp(1, 10))
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
        let (queue, contract, invocations, handler, arn) = (
            queue.clone(),
            contract.clone(),
            invocations.clone(),
            handler.clone(),
            arn.clone(),
        );
        started.spawn(async move {
            invoke_with(&queue, &contract, &invocations, handler, messages, &arn).await;
            drop(permit);
        });
    }
}

/// One request to the API function, counted as its invocation: how long it took and the
/// most memory it held ([`crate::memory`]).
async fn api_invocation(
    axum::extract::State(invocations): axum::extract::State<Arc<Invocations>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let tag = crate::memory::begin();
    let started = tokio::time::Instant::now();
    let response = crate::memory::Tagged::new(tag, next.run(request)).await;
    invocations.count(
        "ApiFunction",
        false,
        started.elapsed(),
        crate::memory::peak(tag),
    );
    response
}

/// One invocation with a batch of messages; then what Lambda does with its answer: deletes
/// the messages that succeeded and leaves the others to come again.
async fn invoke_with<F, Fut>(
    queue: &Queue,
    contract: &Contract,
    invocations: &Invocations,
    handler: F,
    messages: Vec<aws_sdk_sqs::types::Message>,
    arn: &str,
) where
    F: Fn(SqsEvent, domain::Deadline) -> Fut,
    Fut: Future<Output = Result<SqsBatchResponse, domain::Error>>,
{
    let Queue {
        sqs,
        admin,
        url,
        retry_after,
    } = queue;
    let retry_after = *retry_after;
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
            r.event_source_arn = Some(arn.to_string());
            r.aws_region = Some(crate::emulator::REGION.into());
            r
        })
        .collect();
    let answer = contract
        .invoke(invocations, |deadline| handler(event, deadline))
        .await;
    let Some(answer) = answer else {
        // Abandoned at its deadline: nothing is deleted, and the messages come again once
        // the queue's visibility timeout has passed.
        return;
    };
    let failed: HashSet<String> = match answer {
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
            .queue_url(url)
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
        // Locally only, and so as the administrator: Lambda leaves a failed message to
        // come back after the queue's visibility timeout; here it comes back sooner.
        if let Some(handle) = &m.receipt_handle {
            let _ = admin
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(retry_after)
                .send()
                .await;
        }
    }
}
