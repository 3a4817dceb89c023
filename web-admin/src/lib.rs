//! REST API and admin UI. For now: the health check the tests and load balancers use, and
//! the Prometheus metrics of the NEARLINE path.
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
        .route("/metrics", get(metrics))
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
