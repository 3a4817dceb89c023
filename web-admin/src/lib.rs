//! REST API and admin UI. For now: the health check the tests and load balancers use.
//! The full API and UI arrive with their issue; routes are added here, never in the binary.

#![forbid(unsafe_code)]

use archive_core::index::Index;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct WebState {
    pub index: Index,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
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
