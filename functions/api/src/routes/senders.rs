//! The senders a dispatch may use: the SES account's verified identities, for the portal
//! to offer when a dispatch's `email.from` is chosen.

use crate::auth::require;
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use domain::identity::{Caller, Permission};
use serde_json::{json, Value};

/// `GET /senders`: every identity that may send (an address, or a whole domain).
pub(crate) async fn list_senders(
    State(deps): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    require(&caller, Permission::Create, "list the senders")?;
    let senders = deps.senders.list().await?;
    Ok(Json(json!({ "senders": senders })))
}
