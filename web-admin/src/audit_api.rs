//! `GET /api/audit`: the audit trail, newest first, with filters. Reading it is not itself an
//! event (the API and UI are behind the admin token).

use crate::api::{ApiError, ApiResult};
use crate::WebState;
use archive_core::audit::{AuditAction, AuditFilter, AuditOutcome};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<WebState> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub actor: Option<String>,
    pub study: Option<String>,
    pub patient: Option<String>,
    /// Milliseconds since the epoch, or an RFC 3339 time.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Events with a smaller id: the next page is `before=<last id of this one>`.
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// The index filter, or a 400 naming the parameter that is wrong.
    pub(crate) fn filter(&self) -> ApiResult<AuditFilter> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_request("limit", "must be between 1 and 1000"));
        }
        Ok(AuditFilter {
            action: choice::<AuditAction>(&self.action, "action")?,
            outcome: choice::<AuditOutcome>(&self.outcome, "outcome")?,
            actor: given(&self.actor),
            study_uid: given(&self.study),
            patient_id: given(&self.patient),
            since: time(&self.since, "since")?,
            until: time(&self.until, "until")?,
            before_id: self.before,
            limit,
        })
    }
}

fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn choice<T>(value: &Option<String>, name: &str) -> ApiResult<Option<T>>
where
    T: std::str::FromStr<Err = archive_core::text_enum::UnknownValue>,
{
    given(value)
        .map(|v| v.to_ascii_uppercase().parse())
        .transpose()
        .map_err(|e: archive_core::text_enum::UnknownValue| {
            ApiError::bad_request(name, format!("must be one of {}", e.expected.join(", ")))
        })
}

fn time(value: &Option<String>, name: &str) -> ApiResult<Option<i64>> {
    let Some(text) = given(value) else {
        return Ok(None);
    };
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(Some(millis));
    }
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            ApiError::bad_request(
                name,
                "must be milliseconds since 1970 or an RFC 3339 time (2026-12-01T08:00:00Z)",
            )
        })
}

async fn list(
    State(state): State<WebState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let events = state.index.list_audit_events(&query.filter()?).await?;
    Ok(Json(json!({ "events": events })))
}
