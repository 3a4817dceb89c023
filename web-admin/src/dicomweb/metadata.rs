//! WADO-RS `/metadata` at study, series and instance level: the DICOM JSON made at ingest
//! (archive_core::metadata), read from the index in one query. Nothing is read from ONLINE
//! files or NEARLINE targets, so a study's metadata costs the same on every tier.

use super::{accept, not_found, Links, DICOM_JSON};
use crate::api::ApiError;
use crate::WebState;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub async fn study(
    State(state): State<WebState>,
    links: Links,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    answer(&state, &links, &headers, &study, None, None).await
}

pub async fn series(
    State(state): State<WebState>,
    links: Links,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    answer(&state, &links, &headers, &study, Some(&series), None).await
}

pub async fn instance(
    State(state): State<WebState>,
    links: Links,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    answer(
        &state,
        &links,
        &headers,
        &study,
        Some(&series),
        Some(&instance),
    )
    .await
}

async fn answer(
    state: &WebState,
    links: &Links,
    headers: &HeaderMap,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Response, ApiError> {
    accept::require_json(headers)?;
    let rows = state.index.metadata(study, series, instance).await?;
    if rows.is_empty() {
        return Err(not_found(format!(
            "no metadata for {}",
            instance
                .map(|i| format!("instance {i}"))
                .or(series.map(|s| format!("series {s}")))
                .unwrap_or_else(|| format!("study {study}"))
        )));
    }
    // The JSON of each instance is already made: the answer is their concatenation.
    let mut body = String::with_capacity(rows.len() * 4096);
    body.push('[');
    for (position, row) in rows.iter().enumerate() {
        if position > 0 {
            body.push(',');
        }
        let url = links.instance(&row.study_uid, &row.series_uid, &row.sop_uid);
        let json = archive_core::metadata::decode(&row.metadata, &url).map_err(|e| {
            tracing::error!(error = %e, sop_instance_uid = %row.sop_uid, "stored metadata is unreadable");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable_metadata",
                "stored metadata is unreadable",
            )
        })?;
        body.push_str(&json);
    }
    body.push(']');
    Ok(([(CONTENT_TYPE, DICOM_JSON)], body).into_response())
}
