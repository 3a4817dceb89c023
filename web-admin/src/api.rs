//! The JSON API under `/api` (bearer token, see `auth`): studies with their availability and
//! copies, actions on a study (each queues a job and returns it), and jobs across all nodes.
//! Errors are `{"code": "...", "message": "..."}` with a fitting 4xx/5xx status.

use crate::WebState;
use archive_core::actions::{self, ActionError, StudyAction};
use archive_core::index::{now_millis, StudySearch};
use archive_core::jobs::{Job, JobFilter, JobState, JobType};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// An API error: a stable machine-readable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials",
        )
    }
    fn not_found(what: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    /// 400 `invalid_request`, the message starting with the field it is about.
    /// A JSON body axum could not take: keeps its status (413 over `http.max_body_bytes`,
    /// 415 without a JSON content type, 400 otherwise) with the reason in our error shape.
    pub fn from_json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_request",
        };
        ApiError::new(status, code, format!("body: {}", rejection.body_text()))
    }

    pub fn bad_request(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// Database trouble is a 503: the request may work again; details go to the log only.
impl From<archive_core::index::IndexError> for ApiError {
    fn from(error: archive_core::index::IndexError) -> ApiError {
        tracing::error!(%error, "API: index error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "index_unavailable",
            "the index is unavailable",
        )
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/studies", get(search_studies))
        .route("/studies/{uid}", get(study_detail))
        .route("/studies/{uid}/availability", get(study_availability))
        .route("/studies/{uid}/{action}", post(study_action))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(job_route))
        .route("/jobs/{id}/cancel", post(job_route))
        .route("/jobs/{id}/retry", post(job_route))
}

/// The OpenAPI 3 document of these routes (hand-written, checked by the API tests).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> (
    [(axum::http::header::HeaderName, &'static str); 1],
    &'static str,
) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyQuery {
    patient_id: Option<String>,
    patient_name: Option<String>,
    date_from: Option<String>,
    date_to: Option<String>,
    modality: Option<String>,
    accession_number: Option<String>,
    availability: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn check_date(field: &str, value: &Option<String>) -> ApiResult<()> {
    match value {
        Some(date) if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) => Err(
            ApiError::bad_request(field, format!("`{date}` is not a date like 20240315")),
        ),
        _ => Ok(()),
    }
}

/// An optional query parameter that must name one of an enum's values (ONLINE, QUEUED, …);
/// otherwise a 400 naming the parameter and the values there are.
fn parse_choice<T>(value: &Option<String>, name: &str) -> ApiResult<Option<T>>
where
    T: std::str::FromStr<Err = archive_core::text_enum::UnknownValue>,
{
    value.as_deref().map(str::parse).transpose().map_err(
        |e: archive_core::text_enum::UnknownValue| {
            ApiError::bad_request(name, format!("must be one of {}", e.expected.join(", ")))
        },
    )
}

async fn search_studies(
    State(state): State<WebState>,
    query: Result<Query<StudyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    check_date("date_from", &query.date_from)?;
    check_date("date_to", &query.date_to)?;
    let availability = parse_choice(&query.availability, "availability")?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit", "must be between 1 and 1000"));
    }
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("offset", "must not be negative"));
    }
    let search = StudySearch {
        patient_id: query.patient_id,
        patient_name: query.patient_name,
        date_from: query.date_from,
        date_to: query.date_to,
        modality: query.modality,
        accession_number: query.accession_number,
        availability,
        limit,
        offset,
    };
    let studies = state.index.search_studies(&search).await?;
    Ok(Json(
        json!({ "studies": studies, "limit": limit, "offset": offset }),
    ))
}

pub(crate) async fn study_or_404(
    state: &WebState,
    uid: &str,
) -> ApiResult<archive_core::index::StudyRow> {
    state
        .index
        .study(uid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no study with Study Instance UID {uid}")))
}

/// Every copy of the study: ONLINE filesystems and NEARLINE packs with their status.
pub(crate) async fn copies(state: &WebState, uid: &str) -> ApiResult<Value> {
    let online = state.index.online_copies(uid).await?;
    let packs = state.index.packs_of_study(uid).await?;
    let fixity = state.index.fixity_of_study(uid).await?;
    let last_check = |copy: &str| fixity.iter().find(|f| f.copy == copy);
    let nearline: Vec<Value> = packs
        .iter()
        .map(|p| {
            json!({
                "target": p.target_name, "key": p.object_key, "status": p.status,
                "size_bytes": p.size_bytes, "instances": p.member_count,
                "created_at": p.created_at, "verified_at": p.verified_at, "error": p.error,
                "fixity": last_check(&format!("pack {}", p.id)),
            })
        })
        .collect();
    Ok(json!({ "online": online, "nearline": nearline, "online_fixity": last_check("ONLINE") }))
}

async fn study_detail(
    State(state): State<WebState>,
    Path(uid): Path<String>,
) -> ApiResult<Json<Value>> {
    let study = study_or_404(&state, &uid).await?;
    let series = state.index.series_of_study(&uid).await?;
    let copies = copies(&state, &uid).await?;
    Ok(Json(
        json!({ "study": study, "series": series, "copies": copies }),
    ))
}

async fn study_availability(
    State(state): State<WebState>,
    Path(uid): Path<String>,
) -> ApiResult<Json<Value>> {
    let study = study_or_404(&state, &uid).await?;
    let copies = copies(&state, &uid).await?;
    Ok(Json(json!({
        "study_uid": uid, "availability": study.availability,
        "online": copies["online"], "nearline": copies["nearline"],
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// copy / verify: the target (default: the only one); delete-online: only copies there.
    target: Option<String>,
}

async fn study_action(
    State(state): State<WebState>,
    Path((uid, action)): Path<(String, String)>,
    body: Option<Json<ActionBody>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let target = body.and_then(|Json(b)| b.target);
    let (job, created) = enqueue_action(&state, &uid, &action, target).await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "job": job, "created": created }))))
}

/// Queues `action` (copy, verify, delete-online, restore) for a study; the job and whether it
/// is new (an equal live job is returned instead of a second one). Shared with the admin UI.
pub(crate) async fn enqueue_action(
    state: &WebState,
    uid: &str,
    action: &str,
    target: Option<String>,
) -> ApiResult<(Job, bool)> {
    let action: StudyAction = action.parse().map_err(|_| {
        ApiError::not_found(format!(
            "unknown action `{action}` (copy, verify, delete-online, restore)"
        ))
    })?;
    let index = &state.index;
    let requested = actions::request(
        index,
        action,
        uid,
        target.as_deref(),
        "api",
        state.max_attempts,
    )
    .await
    .map_err(|error| match error {
        ActionError::UnknownStudy(_) => ApiError::not_found(error.to_string()),
        ActionError::Index(error) => error.into(),
        target_error => ApiError::bad_request("target", target_error.to_string()),
    })?;
    let enqueued = requested.enqueued;
    let job = index
        .job(enqueued.job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {} vanished", enqueued.job_id)))?;
    Ok((job, enqueued.created))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    state: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    study: Option<String>,
    limit: Option<i64>,
}

async fn list_jobs(
    State(state): State<WebState>,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let job_state: Option<JobState> = parse_choice(&query.state, "state")?;
    let job_type: Option<JobType> = parse_choice(&query.job_type, "type")?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit", "must be between 1 and 1000"));
    }
    let jobs: Vec<Job> = state
        .index
        .list_jobs(&JobFilter {
            state: job_state,
            job_type,
            study_uid: query.study,
            limit,
        })
        .await?;
    Ok(Json(json!({ "jobs": jobs })))
}

fn job_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("id", format!("`{raw}` is not a job id")))
}

async fn job_or_404(state: &WebState, id: i64) -> ApiResult<Job> {
    state
        .index
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// `GET /jobs/{id}`, and `POST /jobs/{id}/cancel` or `/retry` (by the path's last segment):
/// the job as it is afterwards.
async fn job_route(
    State(state): State<WebState>,
    matched: axum::extract::MatchedPath,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let job = match matched.as_str().rsplit('/').next() {
        Some("cancel") => cancel(&state, id).await?,
        Some("retry") => retry(&state, id).await?,
        _ => job_or_404(&state, id).await?,
    };
    Ok(Json(json!({ "job": job })))
}

/// Cancels a job that has not ended (shared with the admin UI).
pub(crate) async fn cancel(state: &WebState, id: i64) -> ApiResult<Job> {
    let job = job_or_404(state, id).await?;
    if job.state.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_ended",
            format!("job {id} has already ended ({})", job.state),
        ));
    }
    state.index.cancel_job(id, now_millis()).await?;
    job_or_404(state, id).await
}

/// Queues a FAILED or CANCELLED job again (shared with the admin UI).
pub(crate) async fn retry(state: &WebState, id: i64) -> ApiResult<Job> {
    job_or_404(state, id).await?;
    if !state.index.retry_job(id, now_millis()).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!("job {id} is not FAILED or CANCELLED, or the same work is already queued"),
        ));
    }
    job_or_404(state, id).await
}
