//! Api: the HTTP API the internal portal calls. One axum router, served by `lambda_http` in
//! Lambda and directly on a local port by the local runtime.
//!
//! Every route but `/health` and `/unsubscribe` (the links in emails) needs a verified caller (the claims of API Gateway's JWT
//! authorizer) with one of the two permissions; the actions say which one they need.
//!
//! | method | path                            | what                                        |
//! |--------|---------------------------------|---------------------------------------------|
//! | GET    | `/health`                       | liveness                                    |
//! | GET/POST | `/unsubscribe?token=`         | one-click unsubscribe (public; signed link) |
//! | GET    | `/dispatches?state=&q=&sort=&order=&limit=&cursor=` | dispatches: filter, search, sort, pages |
//! | POST   | `/dispatches`                   | start a dispatch; its package is uploaded next (create) |
//! | GET    | `/dispatches/{id}`              | one dispatch: state, counts, summary        |
//! | GET    | `/senders`                      | the verified identities emails may be sent from (create) |
//! | GET    | `/dispatches/{id}/report`       | validation report (CSV)                     |
//! | GET    | `/dispatches/{id}/sample`       | rendered sample messages (JSON)             |
//! | GET    | `/dispatches/{id}/sample/letters/{n}` | a sample letter's PDF (`303` to a link) |
//! | GET/POST | `/dispatches/{id}/print`      | the print files; build them again (a job)   |
//! | POST   | `/dispatches/{id}/print/close`  | close the letter run: the files are final   |
//! | GET    | `/dispatches/{id}/print/parts/{n}` | a print part's PDF or index (`303`)      |
//! | GET    | `/dispatches/{id}/example?format=csv\|xlsx` | the header the list must have  |
//! | GET    | `/dispatches/{id}/attempts/{n}/report` | an earlier validation attempt's report |
//! | GET    | `/dispatches/{id}/audit`        | every action on the dispatch: actor, time, outcome |
//! | GET    | `/dispatches/{id}/history`      | history document (CSV), once complete       |
//! | GET    | `/dispatches/{id}/history/summary` | counts, receipts and audit trail (JSON)  |
//! | POST   | `/dispatches/{id}/forward`      | forward the approval to a named approver (send) |
//! | POST   | `/dispatches/{id}/approve`      | approve: fan-out starts (send; four eyes)   |
//! | POST   | `/dispatches/{id}/reject`       | reject: nothing (more) is sent (send)       |
//! | GET    | `/dispatches/{id}/recipients?state=&limit=&cursor=` | recipients, a page at a time |
//! | POST   | `/dispatches/{id}/pause`        | stop sending within about 2 s               |
//! | POST   | `/dispatches/{id}/resume`       | continue with the recipients not yet sent   |
//! | POST   | `/dispatches/{id}/close`        | close a dispatch completed with errors      |
//! | POST   | `/dispatches/{id}/cancel`       | withdraw before approval (create)           |
//! | POST   | `/dispatches/{id}/archive`      | archive a dispatch that is over             |
//! | POST   | `/dispatches/{id}/repeat`       | validate the package again (create)         |
//! | POST   | `/dispatches/{id}/remove`       | remove recipients before approval (create)  |
//! | POST   | `/dispatches/{id}/resend`       | send again to failed recipients, a new attempt (send) |
//! | GET    | `/dispatches/{id}/download?format=csv\|xlsx` | the list with each recipient's status (303 to the file) |

mod auth;
mod error;
mod input;
mod routes;
mod view;

pub use error::ApiError;
pub use view::DispatchView;

use adapters::dynamodb::Store;
use adapters::s3::Documents;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::config::Config;
use engine::completion::Completer;
use routes::lifecycle::{self, CANCEL, PAUSE, REJECT, RESUME};
use routes::{approval, dispatches, documents, print, recipients};
use serde_json::json;
use std::sync::Arc;

pub struct Deps {
    pub config: Config,
    pub store: Store,
    pub docs: Documents,
    pub sqs: aws_sdk_sqs::Client,
    pub completer: Completer,
    pub senders: adapters::senders::Senders,
}

impl Deps {
    pub fn new(config: Config, clients: &adapters::clients::Clients) -> Deps {
        Deps {
            completer: adapters::wiring::completer(clients, &config),
            store: Store::from_config(clients, &config),
            docs: Documents::from_config(clients, &config),
            sqs: clients.sqs.clone(),
            senders: adapters::senders::Senders::new(clients.sesv2.clone()),
            config,
        }
    }
}

type AppState = Arc<Deps>;

/// The API's routes.
pub fn router(deps: Arc<Deps>) -> Router {
    let guarded = Router::new()
        .route(
            "/dispatches",
            get(dispatches::list_dispatches).post(dispatches::start_dispatch),
        )
        .route("/dispatches/{id}", get(dispatches::get_dispatch))
        .route("/senders", get(routes::senders::list_senders))
        .route("/dispatches/{id}/report", get(documents::get_report))
        .route("/dispatches/{id}/sample", get(documents::get_sample))
        .route(
            "/dispatches/{id}/sample/letters/{n}",
            get(documents::get_sample_letter),
        )
        .route("/dispatches/{id}/example", get(documents::get_example))
        .route(
            "/dispatches/{id}/attempts/{n}/report",
            get(documents::get_attempt_report),
        )
        .route("/dispatches/{id}/audit", get(documents::get_audit))
        .route(
            "/dispatches/{id}/recipients",
            get(recipients::get_recipients),
        )
        .route("/dispatches/{id}/history", get(documents::get_history))
        .route(
            "/dispatches/{id}/history/summary",
            get(documents::get_history_summary),
        )
        .route("/dispatches/{id}/forward", post(approval::forward))
        .route("/dispatches/{id}/approve", post(approval::approve))
        .route("/dispatches/{id}/reject", post(lifecycle::handler(&REJECT)))
        .route("/dispatches/{id}/pause", post(lifecycle::handler(&PAUSE)))
        .route("/dispatches/{id}/resume", post(lifecycle::handler(&RESUME)))
        .route("/dispatches/{id}/close", post(lifecycle::close))
        .route("/dispatches/{id}/cancel", post(lifecycle::handler(&CANCEL)))
        .route("/dispatches/{id}/archive", post(lifecycle::archive))
        .route("/dispatches/{id}/repeat", post(lifecycle::repeat))
        .route("/dispatches/{id}/remove", post(recipients::remove))
        .route("/dispatches/{id}/resend", post(recipients::resend))
        .route("/dispatches/{id}/jobs/{job}", get(recipients::get_job))
        .route(
            "/dispatches/{id}/print",
            get(print::get_print).post(print::build_print),
        )
        .route("/dispatches/{id}/print/close", post(print::close_print))
        .route("/dispatches/{id}/print/parts/{n}", get(print::get_part))
        .route(
            "/dispatches/{id}/download",
            get(documents::download).post(documents::download_job),
        )
        // Inside the caller check: refusals of a known caller are audited.
        .route_layer(middleware::from_fn_with_state(
            deps.clone(),
            routes::steps::audit_refusals,
        ))
        .route_layer(middleware::from_fn_with_state(deps.clone(), auth::identify));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/unsubscribe",
            get(routes::unsubscribe::confirm).post(routes::unsubscribe::unsubscribe),
        )
        .merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(domain::limits::input::BODY_BYTES))
        // Outermost: every refusal, the framework's own too, is a problem document.
        .layer(middleware::from_fn(error::problems))
        .with_state(deps)
}
