//! The local stand-in for API Gateway's JWT authorizer.
//!
//! Tokens are signed with a local key (HS256) and verified the way API Gateway verifies them:
//! signature, issuer, audience, expiry and not-before. A verified token's claims reach the API
//! function in the same request context API Gateway builds (`authorizer.jwt.claims`, array
//! claims flattened to `[a b]`), so the function reads its caller exactly as it does in AWS. A
//! request without a valid token is answered as API Gateway answers it: `401` and
//! `{"message":"Unauthorized"}`; the function never sees it.

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The issuer and audience of local tokens (the template's `JwtIssuer` and `JwtAudience` in
/// AWS).
pub const ISSUER: &str = "https://mass-dispatch.local/";
pub const AUDIENCE: &str = "mass-dispatch-portal";

/// Signs and verifies local tokens.
#[derive(Clone)]
pub struct LocalIssuer {
    key: Vec<u8>,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalIssuer")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LocalIssuer {
    pub fn new(key: Vec<u8>) -> LocalIssuer {
        LocalIssuer { key }
    }

    /// A fresh random key, for a runtime of its own (tests).
    pub fn random() -> LocalIssuer {
        let key: [u8; 32] = rand::random();
        LocalIssuer::new(key.to_vec())
    }

    /// The key kept in `file` (made on first use), so that `local token` mints tokens the
    /// runtime of `local up` accepts.
    pub fn from_file(file: &Path) -> Result<LocalIssuer> {
        if let Ok(hex_key) = std::fs::read_to_string(file) {
            let key = hex::decode(hex_key.trim())
                .with_context(|| format!("{} is not a hex key", file.display()))?;
            return Ok(LocalIssuer::new(key));
        }
        let issuer = LocalIssuer::random();
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, hex::encode(&issuer.key))
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(issuer)
    }

    /// A token for `user` with `roles`, valid for `valid_for`.
    pub fn mint(&self, user: &str, roles: &[&str], valid_for: Duration) -> String {
        let now = now_secs();
        self.sign(&json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user,
            "roles": roles,
            "iat": now,
            "nbf": now,
            "exp": now + valid_for.as_secs(),
        }))
    }

    /// A token with exactly these claims (to try expired or foreign tokens).
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.key),
        )
        .unwrap_or_default()
    }

    /// The claims of a valid token, flattened as API Gateway passes them on.
    pub fn verify(&self, token: &str) -> Result<HashMap<String, String>, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(&self.key),
            &v,
        )
        .map_err(|e| e.to_string())?;
        Ok(flatten(data.claims))
    }
}

/// Claims as API Gateway hands them to a function: strings as they are, arrays as `[a b]`,
/// anything else as its JSON text.
pub fn flatten(claims: Map<String, Value>) -> HashMap<String, String> {
    claims
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Array(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

/// The request context API Gateway (HTTP API, payload 2.0) gives a function for a request
/// whose token its JWT authorizer accepted.
pub fn request_context(
    claims: &HashMap<String, String>,
    method: &str,
    path: &str,
) -> Option<lambda_http::request::RequestContext> {
    let ctx = serde_json::from_value(json!({
        "routeKey": "ANY /{proxy+}",
        "accountId": "000000000000",
        "stage": "$default",
        "requestId": uuid::Uuid::new_v4().to_string(),
        "authorizer": {"jwt": {"claims": claims, "scopes": null}},
        "apiId": "local",
        "domainName": "localhost",
        "timeEpoch": now_secs() * 1000,
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "local"
        }
    }))
    .ok()?;
    Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx))
}

/// The local API Gateway's authorizer: the token check, and the routes the template leaves
/// without one.
#[derive(Clone)]
pub struct Authorizer {
    pub issuer: LocalIssuer,
    /// (method, path) of the routes with `AuthorizationType: NONE`.
    pub public: Vec<(String, String)>,
}

/// Axum middleware: lets a request through only with a valid bearer token, and hands its
/// claims on in the request context; a route without an authorizer is let through as is.
pub async fn authorize(
    State(Authorizer { issuer, public }): State<Authorizer>,
    mut req: Request,
    next: Next,
) -> Response {
    if public
        .iter()
        .any(|(m, p)| m == req.method().as_str() && p == req.uri().path())
    {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let context = token
        .and_then(|t| issuer.verify(t).ok())
        .and_then(|claims| request_context(&claims, req.method().as_str(), req.uri().path()));
    match context {
        Some(ctx) => {
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::WWW_AUTHENTICATE, "Bearer"),
            ],
            r#"{"message":"Unauthorized"}"#,
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_the_key_in_time_for_this_audience() {
        let issuer = LocalIssuer::random();
        let token = issuer.mint("ann", &["MASSDISPATCH"], Duration::from_secs(60));
        let claims = issuer.verify(&token).unwrap();
        assert_eq!(claims["sub"], "ann");
        assert_eq!(claims["roles"], "[MASSDISPATCH]");

        assert!(LocalIssuer::random().verify(&token).is_err(), "another key");
        let now = now_secs();
        let expired = issuer.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "ann",
            "exp": now - 10}));
        assert!(issuer.verify(&expired).is_err(), "expired");
        let foreign = issuer.sign(&json!({"iss": "https://elsewhere/", "aud": AUDIENCE,
            "sub": "ann", "exp": now + 60}));
        assert!(issuer.verify(&foreign).is_err(), "another issuer");
        let later = issuer.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "ann",
            "nbf": now + 600, "exp": now + 900}));
        assert!(issuer.verify(&later).is_err(), "not yet valid");
        assert!(issuer.verify("not.a.token").is_err());
    }

    #[test]
    fn the_request_context_carries_the_claims_as_api_gateway_does() {
        let claims = HashMap::from([("sub".to_string(), "ann".to_string())]);
        match request_context(&claims, "POST", "/dispatches/x/approve") {
            Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => {
                let jwt = ctx.authorizer.and_then(|a| a.jwt).unwrap();
                assert_eq!(jwt.claims["sub"], "ann");
            }
            other => panic!("{other:?}"),
        }
    }
}
