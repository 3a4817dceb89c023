//! REST API and admin UI (axum). `/healthz` needs no credentials; `/metrics` and `/api/*`
//! need the admin token. Routes are added here, never in the binary.

#![forbid(unsafe_code)]

pub mod api;
mod audit_api;
pub mod audit_http;
pub mod auth;
pub mod dicomweb;
mod filesystems_api;
pub mod server;
mod settings_api;
pub mod ui;
pub mod viewer;

pub use auth::AdminToken;

use archive_core::accept::Acceptor;
use archive_core::audit::Auditor;
use archive_core::index::Index;
use archive_core::online::OnlineStore;
use archive_core::retrieve::Retriever;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct WebState {
    pub index: Index,
    /// This node's ONLINE store: told at once when an admin changes filesystems.
    pub online: OnlineStore,
    pub token: AdminToken,
    /// Attempts given to jobs queued through the API (`lifecycle.max_attempts`).
    pub max_attempts: u32,
    /// Largest request body any handler reads into memory (`http.max_body_bytes`).
    pub max_body_bytes: usize,
    /// STOW-RS stores through the same accept path as C-STORE.
    pub acceptor: Acceptor,
    /// WADO-RS reads through the same retriever (and retrieve cache) as C-MOVE.
    pub retriever: Retriever,
    pub dicomweb: dicomweb::DicomWebSettings,
    /// The OHIF viewer is served at /viewer/ (study pages link to it).
    pub viewer_enabled: bool,
    /// DICOMweb requests, changes through the API and UI, and logins are recorded here.
    pub auditor: Auditor,
}

pub fn router(state: WebState, viewer: Option<viewer::Viewer>) -> Router {
    let body_limit = DefaultBodyLimit::max(state.max_body_bytes);
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .nest(
            "/api",
            api::routes()
                .merge(settings_api::routes())
                .merge(audit_api::routes())
                .merge(filesystems_api::routes()),
        )
        .route_layer(from_fn_with_state(state.token.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(|| async { axum::response::Redirect::to("/ui/") }))
        .merge(ui::routes(state.clone()))
        .merge(protected)
        .merge(dicomweb::routes(&state))
        .merge(viewer.map(viewer::Viewer::routes).unwrap_or_default())
        .fallback(|| async {
            api::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        // Every handler here reads whole bodies (JSON, forms); none streams.
        .layer(body_limit)
        // Outside the credential checks, so it sees who they let in (or that they did not).
        .layer(from_fn_with_state(
            state.clone(),
            audit_http::audit_requests,
        ))
        .with_state(state)
}

/// Prometheus text: NEARLINE fetches, range reads, bytes read, retrieve cache.
async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        archive_core::metrics::prometheus_text(),
    )
}

/// 200 when the index answers, 503 otherwise: a node that cannot reach its database must be
/// taken out of rotation.
async fn healthz(State(state): State<WebState>) -> (StatusCode, Json<Value>) {
    match state.index.counts().await {
        Ok(counts) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "instances": counts.instances })),
        ),
        Err(error) => {
            tracing::warn!(%error, "health check: index unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "index unavailable" })),
            )
        }
    }
}
