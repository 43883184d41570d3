//! A fault-injection proxy between the SDK and the emulator: real HTTP, so the SDK's own
//! retry and timeout logic runs for real. Rules pick requests by operation and body and answer
//! them with a throttle, a server error, a delay or a dropped connection; everything else is
//! forwarded. Every request is also logged (time, service, operation) for the benchmarks that
//! count calls and measure send rates.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy knows of a request when it applies its rules.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `X-Amz-Target` (JSON protocols: DynamoDB, SQS).
    pub target: String,
    pub body: String,
}

impl Seen {
    /// SES v2 `SendEmail`.
    pub fn is_send_email(&self) -> bool {
        self.method == "POST" && self.path.starts_with("/v2/email/outbound-emails")
    }

    /// SES v2 `GetAccount`.
    pub fn is_get_account(&self) -> bool {
        self.method == "GET" && self.path == "/v2/email/account"
    }

    /// SNS `Publish`.
    pub fn is_sns_publish(&self) -> bool {
        self.body.contains("Action=Publish")
    }

    /// An SNS publish of an SMS (to a phone number), not to a topic.
    pub fn is_sms_publish(&self) -> bool {
        self.is_sns_publish() && self.body.contains("PhoneNumber=")
    }

    /// A DynamoDB operation, e.g. `UpdateItem`.
    pub fn is_dynamodb(&self, op: &str) -> bool {
        self.target == format!("DynamoDB_20120810.{op}")
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with the given error code, as SES answers over its rate.
    Throttle(&'static str),
    /// 500 InternalFailure.
    ServerError,
    /// 400 with the given error code: the provider refuses the request for good (SES's
    /// `MessageRejected`).
    Refuse(&'static str),
    /// Answer after a pause (the request is forwarded).
    Delay(Duration),
    /// Answer with this JSON body instead of the emulator (an operation it lacks).
    Respond(StatusCode, &'static str),
    /// Close the connection without an answer, after forwarding the request or before.
    Reset { forwarded: bool },
}

/// One request as it reached the proxy.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: std::time::Instant,
    /// The service named in the request's signature (`dynamodb`, `sqs`, `ses`, `sns`, `s3` …).
    pub service: String,
    /// The operation, as far as the request shows it.
    pub op: String,
    /// DynamoDB: items the request writes (transaction items, batch entries); else 0.
    pub write_items: usize,
    /// Bytes of the answer.
    pub response_bytes: usize,
    /// SQS ReceiveMessage: whether any message came back.
    pub delivered_messages: bool,
}

impl Seen {
    fn service(&self, headers: &HeaderMap) -> String {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("unsigned")
            .to_string()
    }

    fn operation(&self, service: &str) -> String {
        if let Some((_, op)) = self.target.split_once('.') {
            return op.to_string();
        }
        if let Some(action) = self
            .body
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
        {
            // SNS: a text to a phone number, or a notice to a topic.
            if action == "Publish" && self.body.contains("PhoneNumber=") {
                return "Publish SMS".to_string();
            }
            return action.to_string();
        }
        match service {
            "ses" if self.is_send_email() => "SendEmail".into(),
            "ses" if self.is_get_account() => "GetAccount".into(),
            "s3" => match self.method.as_str() {
                "GET" if self.path.trim_matches('/').contains('/') => "GetObject".into(),
                "PUT" if self.path.trim_matches('/').contains('/') => "PutObject".into(),
                "HEAD" => "HeadObject".into(),
                "DELETE" => "DeleteObject".into(),
                m => format!("{m} bucket"),
            },
            _ => format!("{} {}", self.method, self.path),
        }
    }

    fn write_items(&self) -> usize {
        if !self.target.starts_with("DynamoDB_") {
            return 0;
        }
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&self.body) else {
            return 0;
        };
        if let Some(items) = body["TransactItems"].as_array() {
            return items.len();
        }
        if let Some(tables) = body["RequestItems"].as_object() {
            return tables
                .values()
                .filter_map(|v| v.as_array())
                .map(|a| a.len())
                .sum();
        }
        match self.target.rsplit('.').next() {
            Some("PutItem" | "UpdateItem" | "DeleteItem") => 1,
            _ => 0,
        }
    }
}

type Matcher = Box<dyn Fn(&Seen) -> bool + Send + Sync>;

struct Rule {
    matches: Matcher,
    fault: Fault,
    /// Matching requests let through before the fault starts.
    skip: usize,
    /// Faults left to inject; `None` for no end.
    left: Option<usize>,
    injected: usize,
}

struct Inner {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Logged>>,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    inner: Arc<Inner>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, inner }
    }

    /// Adds a rule: after `skip` matching requests, inject `fault` into the next `count`
    /// (`None`: all the rest). Returns the rule's index, for [`FaultProxy::injected`].
    pub fn add(
        &self,
        matches: impl Fn(&Seen) -> bool + Send + Sync + 'static,
        fault: Fault,
        skip: usize,
        count: Option<usize>,
    ) -> usize {
        let mut rules = self.inner.rules.lock().expect("rules");
        rules.push(Rule {
            matches: Box::new(matches),
            fault,
            skip,
            left: count,
            injected: 0,
        });
        rules.len() - 1
    }

    /// Every request so far, in order of arrival.
    pub fn log(&self) -> Vec<Logged> {
        self.inner.log.lock().expect("log").clone()
    }

    /// Forgets the requests so far.
    pub fn clear_log(&self) {
        self.inner.log.lock().expect("log").clear();
    }

    /// How many faults a rule has injected.
    pub fn injected(&self, rule: usize) -> usize {
        self.inner.rules.lock().expect("rules")[rule].injected
    }
}

fn fault_for(inner: &Inner, seen: &Seen) -> Option<Fault> {
    let mut rules = inner.rules.lock().expect("rules");
    for rule in rules.iter_mut() {
        if !(rule.matches)(seen) {
            continue;
        }
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        match &mut rule.left {
            Some(0) => continue,
            Some(n) => *n -= 1,
            None => {}
        }
        rule.injected += 1;
        return Some(rule.fault.clone());
    }
    None
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let at = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        target: parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let service = seen.service(&parts.headers);
    let mut logged = Logged {
        at,
        op: seen.operation(&service),
        service,
        write_items: seen.write_items(),
        response_bytes: 0,
        delivered_messages: false,
    };
    let response = answer(&inner, &seen, parts, body).await;
    if let Ok(r) = &response {
        logged.response_bytes = r.1;
        logged.delivered_messages = r.2;
    }
    inner.log.lock().expect("log").push(logged);
    match response {
        Ok((r, _, _)) => r,
        // Dropping the connection: the server closes it without a response.
        Err(()) => panic!("connection dropped on purpose"),
    }
}

type Answered = Result<(Response, usize, bool), ()>;

async fn answer(
    inner: &Inner,
    seen: &Seen,
    parts: axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Answered {
    let fault = fault_for(inner, seen);
    let reset_after = matches!(fault, Some(Fault::Reset { forwarded: true }));
    match fault {
        Some(Fault::Throttle(code)) if seen.body.contains("Action=") => {
            // Query protocols (SNS) answer with an XML error document.
            let body = format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
                 <Message>Rate exceeded</Message></Error><RequestId>injected</RequestId></ErrorResponse>"
            );
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r.headers_mut().insert(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("text/xml"),
            );
            return Ok((r, 0, false));
        }
        Some(Fault::Throttle(code)) => {
            return Ok((
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    code,
                    "Maximum sending rate exceeded.",
                ),
                0,
                false,
            ))
        }
        Some(Fault::Refuse(code)) => {
            return Ok((
                error(
                    StatusCode::BAD_REQUEST,
                    code,
                    "Email address is not verified.",
                ),
                0,
                false,
            ))
        }
        Some(Fault::ServerError) => {
            return Ok((
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalFailure",
                    "injected fault",
                ),
                0,
                false,
            ))
        }
        Some(Fault::Reset { forwarded: false }) => return Err(()),
        Some(Fault::Reset { forwarded: true }) => {}
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Respond(status, body)) => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            );
            return Ok((r, 0, false));
        }
        None => {}
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = inner.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", inner.upstream),
    );
    // Every header as it came, the host too: the request is signed for the proxy's address,
    // and the emulator checks the signature.
    for (k, v) in &parts.headers {
        if k != "content-length" {
            forward = forward.header(k, v);
        }
    }
    match forward.body(body.to_vec()).send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let bytes = r.bytes().await.unwrap_or_default();
            if reset_after {
                return Err(());
            }
            let delivered = seen.target.ends_with(".ReceiveMessage")
                && serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["Messages"].as_array().map(|m| !m.is_empty()))
                    .unwrap_or(false);
            let mut out = Response::builder().status(status);
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    out = out.header(k, v);
                }
            }
            Ok((
                out.body(Body::from(bytes.clone())).unwrap_or_default(),
                bytes.len(),
                delivered,
            ))
        }
        Err(_) => Ok((
            error(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "upstream did not answer",
            ),
            0,
            false,
        )),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-amzn-errortype"),
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("Error")),
    );
    headers.insert(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}
