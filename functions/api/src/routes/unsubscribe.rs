//! One-click unsubscribe (RFC 8058): the public endpoint of the links in emails of mailings
//! people may leave. `GET` shows a page with one button (mail scanners that open links
//! change nothing); `POST`, from that button or a mail client's one-click, puts the address
//! on the suppression list with the dispatch as the reason. A forged, altered or expired
//! link changes nothing.

use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::suppression::Suppression;
use domain::unsubscribe::{verify, Claim, Refused};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Link {
    #[serde(default)]
    token: String,
}

/// A small page: no script, no outside resources, never framed.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    res
}

fn refused(why: Refused) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link does not work",
        &format!(
            "<p>{}. Nothing was changed. Use the link in the most recent email you received.</p>",
            match why {
                Refused::Forged => "The link is incomplete or was changed",
                Refused::Expired => "The link has expired",
            }
        ),
    )
}

async fn claim_of(deps: &AppState, token: &str) -> Result<Claim, Response> {
    let key = deps.store.signing_key().await.map_err(|e| {
        tracing::error!(error = %e, "no signing key for unsubscribe links");
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again later",
            "<p>Your request could not be handled just now. Nothing was changed.</p>",
        )
    })?;
    verify(
        &key,
        token,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .map_err(refused)
}

/// `GET /unsubscribe?token=`: the confirmation page.
pub async fn confirm(State(deps): State<AppState>, Query(link): Query<Link>) -> Response {
    if let Err(page) = claim_of(&deps, &link.token).await {
        return page;
    }
    page(
        StatusCode::OK,
        "Unsubscribe",
        "<p>Stop receiving these emails?</p>\
         <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
    )
}

/// `POST /unsubscribe?token=`: the address goes on the suppression list, once.
pub async fn unsubscribe(State(deps): State<AppState>, Query(link): Query<Link>) -> Response {
    let claim = match claim_of(&deps, &link.token).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let done = page(
        StatusCode::OK,
        "You are unsubscribed",
        "<p>You will not receive these emails any more.</p>",
    );
    let trouble = || {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again later",
            "<p>Your request could not be handled just now. Nothing was changed.</p>",
        )
    };
    match deps
        .store
        .suppressed(std::slice::from_ref(&claim.address))
        .await
    {
        Ok(found) if !found.is_empty() => return done,
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "suppression list not readable");
            return trouble();
        }
    }
    let entry = Suppression {
        address: claim.address.clone(),
        reason: "unsubscribed".into(),
        detail: Some(format!("one-click link of dispatch {}", claim.dispatch_id)),
        at: domain::model::now_rfc3339(),
        message_id: String::new(),
    };
    if let Err(e) = deps.store.suppress(&[entry]).await {
        tracing::error!(error = %e, "address not put on the suppression list");
        return trouble();
    }
    deps.store
        .audit_or_log(
            &claim.dispatch_id,
            "recipient",
            "unsubscribe",
            &format!("{} is on the suppression list", claim.address),
        )
        .await;
    done
}
