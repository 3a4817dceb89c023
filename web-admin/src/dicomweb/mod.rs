//! DICOMweb (PS3.18): QIDO-RS searches, WADO-RS retrievals and STOW-RS stores under
//! `http.dicomweb_base`, built on the same index, accept path and retriever as DIMSE.
//!
//! Credentials: the admin token for everything; a viewer token (`http.viewer_token_files`)
//! or an admin UI session cookie for the GET routes only (the OHIF viewer served at /viewer/
//! rides on the session). Browsers on other origins are let in by `http.cors_origins`.

mod accept;
mod json;
mod metadata;
mod multipart;
pub mod qido;
mod render_params;
mod rendered;
mod stow;
mod wado;

use crate::api::ApiError;
use crate::audit_http::with_actor;
use crate::{AdminToken, WebState};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, AUTHORIZATION, HOST, ORIGIN, VARY,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// DICOMweb settings from `[http]`, resolved at start.
#[derive(Clone, Debug)]
pub struct DicomWebSettings {
    pub base: String,
    pub cors_origins: Arc<Vec<String>>,
    pub stow_max_bytes: u64,
    /// Read-only tokens: GET routes of DICOMweb only.
    /// Read-only tokens, each with the name of the file it came from.
    pub viewer_tokens: Arc<Vec<(String, AdminToken)>>,
}

impl DicomWebSettings {
    /// Reads the viewer token files; an unreadable or empty one names its key.
    pub fn from_config(
        http: &archive_core::config::HttpConfig,
    ) -> Result<DicomWebSettings, String> {
        let mut viewer_tokens = Vec::new();
        for (i, path) in http.viewer_token_files.iter().enumerate() {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "config key `http.viewer_token_files[{i}]`: cannot read {}: {e}",
                    path.display()
                )
            })?;
            if text.trim().is_empty() {
                return Err(format!(
                    "config key `http.viewer_token_files[{i}]`: {} is empty",
                    path.display()
                ));
            }
            // The file's name says whose token it is in the audit trail (`viewer:<name>`).
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{i}"));
            viewer_tokens.push((name, AdminToken::from_secret(&text)));
        }
        Ok(DicomWebSettings {
            base: http.dicomweb_base.clone(),
            cors_origins: Arc::new(http.cors_origins.clone()),
            stow_max_bytes: http.stow_max_bytes.0,
            viewer_tokens: Arc::new(viewer_tokens),
        })
    }
}

pub fn routes(state: &WebState) -> Router<WebState> {
    let studies = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/studies", get(qido::search_route).post(stow::store))
        .route("/series", get(qido::search_route))
        .route("/instances", get(qido::search_route))
        .route(
            "/studies/{study}",
            get(wado::retrieve_study).post(stow::store_in_study),
        )
        .route("/studies/{study}/metadata", get(metadata::study))
        .route("/studies/{study}/series", get(qido::search_route))
        .route("/studies/{study}/instances", get(qido::search_route))
        .route(
            "/studies/{study}/series/{series}",
            get(wado::retrieve_series),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(metadata::series),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::search_route),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(wado::retrieve_instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(metadata::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(wado::frames),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
            get(wado::bulkdata),
        )
        .route("/studies/{study}/rendered", get(rendered::collection))
        .route("/studies/{study}/thumbnail", get(rendered::collection))
        .route(
            "/studies/{study}/series/{series}/rendered",
            get(rendered::collection),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::collection),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(rendered::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(rendered::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(rendered::frame),
        )
        .route_layer(from_fn_with_state(state.clone(), require_access));
    let legacy = Router::new()
        .route("/wado", get(wado::wado_uri))
        .route_layer(from_fn_with_state(state.clone(), require_access));
    Router::new()
        .nest(&state.dicomweb.base, studies)
        .merge(legacy)
        .layer(from_fn_with_state(state.clone(), cors))
}

/// Admin token: anything. Viewer token or UI session: GET (and HEAD) only; a write with one
/// is 403, not 401, because the credentials are fine, only not for this.
async fn require_access(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if let Some(secret) = bearer {
        if state.token.matches(secret) {
            return with_actor(next.run(request).await, "admin");
        }
        if let Some((name, _)) = state
            .dicomweb
            .viewer_tokens
            .iter()
            .find(|(_, token)| token.matches(secret))
        {
            let actor = format!("viewer:{name}");
            if read_only {
                return with_actor(next.run(request).await, &actor);
            }
            let refused = ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only_token",
                "this token may only read (GET); storing needs the admin token",
            );
            return with_actor(refused.into_response(), &actor);
        }
    } else if read_only && crate::ui::session::session_of(&state.token, request.headers()).is_some()
    {
        return with_actor(next.run(request).await, "admin-ui");
    }
    ApiError::unauthorized().into_response()
}

/// CORS for the origins in `http.cors_origins`: preflights are answered here (before the
/// credentials check, as browsers send them without credentials), and answers carry the
/// origin back. Other origins get no CORS headers, so browsers keep their pages out.
async fn cors(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|value| value.to_str().ok())
        .filter(|origin| state.dicomweb.cors_origins.iter().any(|o| o == origin))
        .and_then(|origin| HeaderValue::from_str(origin).ok());
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let mut response = if request.method() == Method::OPTIONS {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Accept, Content-Type"),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        preflight
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Type, Content-Length, Warning"),
    );
    headers.append(VARY, HeaderValue::from_static("Origin"));
    response
}

/// Absolute URLs of this server's DICOMweb resources, as the request reached it.
#[derive(Clone, Debug)]
pub struct Links {
    root: String,
}

impl Links {
    pub fn study(&self, study: &str) -> String {
        format!("{}/studies/{study}", self.root)
    }
    pub fn series(&self, study: &str, series: &str) -> String {
        format!("{}/series/{series}", self.study(study))
    }
    pub fn instance(&self, study: &str, series: &str, instance: &str) -> String {
        format!("{}/instances/{instance}", self.series(study, series))
    }
}

impl FromRequestParts<WebState> for Links {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Links, Self::Rejection> {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|value| value.to_str().ok())
            .filter(|host| !host.is_empty() && !host.contains(['/', ' ', '"']));
        let root = match host {
            Some(host) => format!("http://{host}{}", state.dicomweb.base),
            None => state.dicomweb.base.clone(),
        };
        Ok(Links { root })
    }
}

/// The DICOMweb routes as OpenAPI 3 (hand-written next to them).
async fn openapi() -> (
    [(axum::http::header::HeaderName, &'static str); 1],
    &'static str,
) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

/// PS3.18's media type of DICOM JSON.
pub(crate) const DICOM_JSON: &str = "application/dicom+json";

pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

pub(crate) fn not_found(what: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
}
