//! ONLINE file-system groups and their filesystems. A group is the set of filesystems that
//! share its name: it appears with its first filesystem and goes with its last. New objects go
//! to the configured store group (`online.store_group`). Changes apply to this node at once
//! and to the other nodes at their next refresh (15 s).

use crate::api::ApiError;
use crate::WebState;
use archive_core::config::{ByteSize, DEFAULT_ONLINE_GROUP};
use archive_core::index::{FilesystemChange, FilesystemEdit, FilesystemRow, Removal};
use archive_core::model::Filesystem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/filesystems", get(list).post(add))
        .route("/filesystems/{id}", get(detail).put(update).delete(remove))
}

fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(field, message)
}

/// A filesystem as the API and the UI's form give it. On change, missing fields keep their
/// value; the path of an existing filesystem cannot change (its files are there).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemBody {
    pub group: Option<String>,
    pub path: Option<String>,
    pub mode: Option<String>,
    pub min_free: Option<ByteSize>,
}

fn check_group(group: &str) -> ApiResult<()> {
    let valid = !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(bad(
            "group",
            "1-64 characters: letters, digits, `_`, `-` or `.`",
        ))
    }
}

fn check_mode(mode: &str) -> ApiResult<()> {
    match mode {
        "rw" | "ro" => Ok(()),
        other => Err(bad(
            "mode",
            format!("`{other}` is neither rw (read-write) nor ro (read-only)"),
        )),
    }
}

/// The directory must be usable for its mode (archive-core prepares it: the spool layout is
/// the ONLINE store's business).
fn check_directory(path: &str, mode: &str) -> ApiResult<()> {
    let dir = std::path::Path::new(path);
    if !dir.is_absolute()
        || dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("path", "must be an absolute path without `..`"));
    }
    archive_core::online::prepare_directory(dir, mode == "rw").map_err(|e| {
        if mode == "rw" {
            bad("path", format!("cannot prepare {path}: {e}"))
        } else {
            bad("path", e.to_string())
        }
    })
}

fn describe(row: &FilesystemRow, store_group: &str) -> Value {
    let fs = &row.filesystem;
    let usage = archive_core::online::group_usage(std::slice::from_ref(fs), &fs.group);
    json!({
        "id": fs.id, "group": fs.group, "path": fs.path, "mode": fs.mode,
        "min_free_bytes": fs.min_free_bytes, "from_config": row.from_config,
        "files": row.files, "bytes": row.bytes,
        "free_bytes": usage.map(|u| u.free), "total_bytes": usage.map(|u| u.total),
        "receives_new_objects": fs.group == store_group && fs.is_writable(),
    })
}

/// Every filesystem, and the groups they form with their summed capacity.
pub async fn overview(state: &WebState) -> ApiResult<Value> {
    let rows = state.index.filesystem_rows().await?;
    let store_group = state.online.store_group();
    let filesystems: Vec<Value> = rows.iter().map(|r| describe(r, store_group)).collect();
    let mut groups: BTreeMap<&str, Vec<Filesystem>> = BTreeMap::new();
    for row in &rows {
        groups
            .entry(row.filesystem.group.as_str())
            .or_default()
            .push(row.filesystem.clone());
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|(name, members)| {
            let usage = archive_core::online::group_usage(members, name);
            json!({
                "name": name, "filesystems": members.len(), "store_group": *name == store_group,
                "free_bytes": usage.map(|u| u.free), "total_bytes": usage.map(|u| u.total),
            })
        })
        .collect();
    Ok(json!({ "store_group": store_group, "groups": groups, "filesystems": filesystems }))
}

async fn list(State(state): State<WebState>) -> ApiResult<Json<Value>> {
    Ok(Json(overview(&state).await?))
}

fn id_of(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| bad("id", format!("`{raw}` is not a filesystem id")))
}

async fn row_or_404(state: &WebState, id: i64) -> ApiResult<FilesystemRow> {
    state
        .index
        .filesystem_rows()
        .await?
        .into_iter()
        .find(|r| r.filesystem.id == id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no filesystem {id}"),
            )
        })
}

async fn detail(State(state): State<WebState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let row = row_or_404(&state, id_of(&id)?).await?;
    Ok(Json(
        json!({ "filesystem": describe(&row, state.online.store_group()) }),
    ))
}

fn body_of(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<FilesystemBody> {
    let Json(value) = body.map_err(ApiError::from_json_rejection)?;
    serde_json::from_value(value).map_err(|e| bad("body", e))
}

fn defined_in_config() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "defined_in_config",
        "this filesystem is defined in the config file (online.filesystems); change it there",
    )
}

/// Applies an edit's outcome to this node's store and turns it into an answer.
async fn settle(state: &WebState, edit: FilesystemEdit) -> ApiResult<Filesystem> {
    match edit {
        FilesystemEdit::Saved(fs) => {
            state.online.refresh(&state.index).await?;
            Ok(fs)
        }
        FilesystemEdit::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such filesystem",
        )),
        FilesystemEdit::FromConfig => Err(defined_in_config()),
        FilesystemEdit::PathTaken(id) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "path_taken",
            format!("filesystem {id} already has this path"),
        )),
    }
}

/// Adds a filesystem (shared by the API and the admin UI).
pub async fn add_filesystem(state: &WebState, body: FilesystemBody) -> ApiResult<Filesystem> {
    let group = body
        .group
        .unwrap_or_else(|| DEFAULT_ONLINE_GROUP.to_string());
    let group = group.trim().to_string();
    check_group(&group)?;
    let mode = body.mode.unwrap_or_else(|| "rw".into());
    check_mode(&mode)?;
    let path = body
        .path
        .map(|p| p.trim().trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("path", "is required"))?;
    check_directory(&path, &mode)?;
    let change = FilesystemChange {
        group,
        path,
        mode,
        min_free_bytes: body.min_free.unwrap_or(ByteSize(1 << 30)).0,
    };
    let edit = state.index.add_filesystem(&change).await?;
    settle(state, edit).await
}

/// Changes group, mode or watermark of a run-time filesystem.
pub async fn update_filesystem(
    state: &WebState,
    id: i64,
    body: FilesystemBody,
) -> ApiResult<Filesystem> {
    let existing = row_or_404(state, id).await?.filesystem;
    if body
        .path
        .as_deref()
        .is_some_and(|p| p.trim_end_matches('/') != existing.path)
    {
        return Err(bad(
            "path",
            "cannot change: the files are there; add a new filesystem instead",
        ));
    }
    let group = body
        .group
        .map_or(existing.group.clone(), |g| g.trim().to_string());
    check_group(&group)?;
    let mode = body.mode.unwrap_or(existing.mode.clone());
    check_mode(&mode)?;
    check_directory(&existing.path, &mode)?;
    let change = FilesystemChange {
        group,
        path: existing.path.clone(),
        mode,
        min_free_bytes: body.min_free.map_or(existing.min_free_bytes, |b| b.0),
    };
    let edit = state.index.update_filesystem(id, &change).await?;
    settle(state, edit).await
}

/// Removes a run-time filesystem that holds no indexed file.
pub async fn remove_filesystem(state: &WebState, id: i64) -> ApiResult<()> {
    match state.index.remove_filesystem(id).await? {
        Removal::Removed => {
            state.online.refresh(&state.index).await?;
            Ok(())
        }
        Removal::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no filesystem {id}"),
        )),
        Removal::FromConfig => Err(defined_in_config()),
        Removal::InUse(why) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_use",
            format!("filesystem {id} is in use: {why}"),
        )),
    }
}

async fn add(
    State(state): State<WebState>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let fs = add_filesystem(&state, body_of(body)?).await?;
    Ok((StatusCode::CREATED, Json(json!({ "filesystem": fs }))))
}

async fn update(
    State(state): State<WebState>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let fs = update_filesystem(&state, id_of(&id)?, body_of(body)?).await?;
    Ok(Json(json!({ "filesystem": fs })))
}

async fn remove(State(state): State<WebState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    remove_filesystem(&state, id_of(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
