//! The archive's settings through the API: capacity and totals, DICOM peers, NEARLINE targets,
//! copy rules, retention rules (with the dry-run preview). Every body is validated with the
//! same checks as the config file; a bad value is a 400 naming the field.

use crate::api::ApiError;
use crate::WebState;
use archive_core::config::{parse_schedule, CopyRuleConfig, RetentionRuleConfig, TargetSpec};
use archive_core::index::{now_millis, Removal, Setting};
use archive_core::model::AePeer;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/ae-titles", get(list_peers))
        .route(
            "/ae-titles/{ae}",
            axum::routing::put(put_peer).delete(remove_peer),
        )
        .route("/targets", get(list_targets))
        .route(
            "/targets/{name}",
            axum::routing::put(put_target).delete(remove_target),
        )
        .route("/copy-rules", get(list_copy_rules))
        .route(
            "/copy-rules/{name}",
            axum::routing::put(put_copy_rule).delete(remove_copy_rule),
        )
        .route("/retention-rules", get(list_retention_rules))
        .route(
            "/retention-rules/{name}",
            axum::routing::put(put_retention_rule).delete(remove_retention_rule),
        )
        .route(
            "/retention-rules/{name}/preview",
            post(preview_retention_rule),
        )
}

fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(field, message)
}

/// The body as `T`, with the path's name filled in; serde's error names the field.
fn body_with_name<T: DeserializeOwned>(body: Value, name: &str) -> ApiResult<T> {
    let Value::Object(mut fields) = body else {
        return Err(bad("body", "must be a JSON object"));
    };
    fields.insert("name".into(), Value::from(name));
    serde_json::from_value(Value::Object(fields)).map_err(|e| bad("body", e))
}

fn json_body(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Value> {
    body.map(|Json(v)| v).map_err(ApiError::from_json_rejection)
}

async fn stats(State(state): State<WebState>) -> ApiResult<Json<Value>> {
    let filesystems: Vec<Value> = state
        .index
        .filesystems()
        .await?
        .into_iter()
        .map(|fs| {
            let usage = archive_core::online::group_usage(std::slice::from_ref(&fs), &fs.group);
            json!({
                "id": fs.id, "group": fs.group, "path": fs.path, "mode": fs.mode,
                "min_free_bytes": fs.min_free_bytes,
                "free_bytes": usage.map(|u| u.free), "total_bytes": usage.map(|u| u.total),
            })
        })
        .collect();
    let availability: Vec<Value> = state
        .index
        .availability_totals()
        .await?
        .into_iter()
        .map(|total| json!(total))
        .collect();
    let jobs: serde_json::Map<String, Value> = state
        .index
        .job_totals()
        .await?
        .into_iter()
        .map(|total| (total.state.to_string(), Value::from(total.jobs)))
        .collect();
    Ok(Json(
        json!({ "filesystems": filesystems, "availability": availability, "jobs": jobs }),
    ))
}

async fn list_peers(State(state): State<WebState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "ae_titles": state.index.ae_list().await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerBody {
    host: String,
    port: u16,
    #[serde(default = "yes")]
    can_query: bool,
    #[serde(default = "yes")]
    can_retrieve: bool,
    #[serde(default = "yes")]
    can_store: bool,
    #[serde(default)]
    description: String,
    /// Open associations to it (C-MOVE) with TLS.
    #[serde(default)]
    tls: bool,
}

fn yes() -> bool {
    true
}

async fn put_peer(
    State(state): State<WebState>,
    Path(ae): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body: PeerBody = serde_json::from_value(json_body(body)?).map_err(|e| bad("body", e))?;
    let peer = save_peer(
        &state,
        AePeer {
            ae_title: ae,
            host: body.host,
            port: body.port,
            can_query: body.can_query,
            can_retrieve: body.can_retrieve,
            can_store: body.can_store,
            description: body.description,
            tls: body.tls,
        },
    )
    .await?;
    Ok(Json(json!({ "ae_title": peer })))
}

/// Adds or changes a DICOM peer (the API's JSON and the admin UI's form both end here).
pub(crate) async fn save_peer(state: &WebState, mut peer: AePeer) -> ApiResult<AePeer> {
    archive_core::config::check_ae_title(&peer.ae_title).map_err(|m| bad("ae_title", m))?;
    peer.ae_title = peer.ae_title.trim().to_string();
    if peer.host.trim().is_empty() {
        return Err(bad("host", "must not be empty"));
    }
    if peer.port == 0 {
        return Err(bad("port", "must be between 1 and 65535"));
    }
    state.index.ae_upsert(&peer).await?;
    Ok(peer)
}

async fn remove_peer(
    State(state): State<WebState>,
    Path(ae): Path<String>,
) -> ApiResult<StatusCode> {
    remove_peer_named(&state, &ae).await
}

pub(crate) async fn remove_peer_named(state: &WebState, ae: &str) -> ApiResult<StatusCode> {
    if state.index.ae_remove(ae.trim()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no peer with AE title {ae}"),
        ))
    }
}

async fn list_targets(State(state): State<WebState>) -> ApiResult<Json<Value>> {
    // Targets hold no secrets (credentials stay in files or the AWS environment).
    let targets: Vec<Value> = state
        .index
        .targets()
        .await?
        .into_iter()
        .map(|t| json!({ "id": t.id, "from_config": t.from_config, "location": t.spec.location(), "settings": t.spec }))
        .collect();
    Ok(Json(json!({ "targets": targets })))
}

async fn put_target(
    State(state): State<WebState>,
    Path(name): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let spec = save_target(&state, body_with_name(json_body(body)?, &name)?).await?;
    Ok(Json(json!({ "target": spec, "location": spec.location() })))
}

/// Adds or changes a NEARLINE target (the API's JSON and the admin UI's form both end here).
pub(crate) async fn save_target(state: &WebState, spec: TargetSpec) -> ApiResult<TargetSpec> {
    let name = spec.name.as_str();
    spec.validate("body").map_err(|e| bad("body", e))?;
    if state
        .index
        .target(name)
        .await?
        .is_some_and(|t| t.from_config)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "defined_in_config",
            format!("`{name}` is defined in the config file; change it there"),
        ));
    }
    state.index.upsert_target(&spec, now_millis()).await?;
    Ok(spec)
}

pub(crate) async fn remove(
    state: &WebState,
    setting: Setting,
    name: &str,
) -> ApiResult<StatusCode> {
    match state.index.remove_setting(setting, name).await? {
        Removal::Removed => Ok(StatusCode::NO_CONTENT),
        Removal::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing named `{name}`"),
        )),
        Removal::FromConfig => Err(ApiError::new(
            StatusCode::CONFLICT,
            "defined_in_config",
            format!("`{name}` is defined in the config file; remove it there"),
        )),
        Removal::InUse(why) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_use",
            format!("`{name}` is in use: {why}"),
        )),
    }
}

async fn remove_target(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    remove(&state, Setting::Target, &name).await
}

async fn remove_copy_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    remove(&state, Setting::CopyRule, &name).await
}

async fn remove_retention_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    remove(&state, Setting::RetentionRule, &name).await
}

async fn list_copy_rules(State(state): State<WebState>) -> ApiResult<Json<Value>> {
    let rules: Vec<Value> = state
        .index
        .copy_rules()
        .await?
        .into_iter()
        .map(|r| json!({ "rule": r.rule, "from_config": r.from_config }))
        .collect();
    Ok(Json(json!({ "copy_rules": rules })))
}

async fn put_copy_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let rule = save_copy_rule(&state, body_with_name(json_body(body)?, &name)?).await?;
    Ok(Json(json!({ "rule": rule })))
}

/// Adds or changes a copy rule (the API's JSON and the admin UI's form both end here).
pub(crate) async fn save_copy_rule(
    state: &WebState,
    rule: CopyRuleConfig,
) -> ApiResult<CopyRuleConfig> {
    parse_schedule(&rule.schedule).map_err(|m| bad("schedule", m))?;
    if rule.target_names().is_empty() {
        return Err(bad(
            "target",
            "name a target (`target`, or `targets` for several)",
        ));
    }
    for name in rule.target_names() {
        if state.index.target(name).await?.is_none() {
            return Err(bad("target", format!("no nearline target named `{name}`")));
        }
    }
    state.index.save_copy_rule(&rule, now_millis()).await?;
    Ok(rule)
}

async fn list_retention_rules(State(state): State<WebState>) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "retention_rules": state.index.retention_rules().await? }),
    ))
}

async fn put_retention_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let rule = save_retention_rule(&state, body_with_name(json_body(body)?, &name)?).await?;
    Ok(Json(json!({ "rule": rule })))
}

/// Adds or changes a retention rule (the API's JSON and the admin UI's form both end here).
pub(crate) async fn save_retention_rule(
    state: &WebState,
    rule: RetentionRuleConfig,
) -> ApiResult<RetentionRuleConfig> {
    if rule.name.trim().is_empty() {
        return Err(bad("name", "must not be empty"));
    }
    rule.validate("body").map_err(|e| bad("body", e))?;
    state.index.save_retention_rule(&rule, now_millis()).await?;
    Ok(rule)
}

/// The dry run: what the rule would delete now, and why every other study stays.
async fn preview_retention_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let rules = state.index.retention_rules().await?;
    let rule = rules.iter().find(|r| r.name == name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no retention rule named `{name}`"),
        )
    })?;
    let entries = archive_core::retention::preview(&state.index, rule).await?;
    Ok(Json(json!({ "rule": rule, "studies": entries })))
}
