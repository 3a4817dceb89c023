//! File-system groups and filesystems (ONLINE), and NEARLINE targets.

use super::session::CheckedForm;
use super::widgets::{badge, bar, bytes};
use super::{csrf_field, error_page, redirect_with, signed_in_page, Notice, Session};
use crate::api::ApiError;
use crate::filesystems_api::{self, FilesystemBody};
use crate::settings_api;
use crate::WebState;
use archive_core::config::{ByteSize, TargetKind, TargetSpec};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde_json::Value;
use std::path::PathBuf;

fn size_field(form: &CheckedForm, name: &str) -> Result<Option<ByteSize>, ApiError> {
    form.optional(name)
        .map(|text| {
            text.parse::<ByteSize>()
                .map_err(|message| ApiError::bad_request("min_free", message))
        })
        .transpose()
}

pub async fn filesystems(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Response {
    let overview = match filesystems_api::overview(&state).await {
        Ok(overview) => overview,
        Err(error) => return error_page(&session, "Filesystems", error),
    };
    let empty = Vec::new();
    let groups = overview["groups"].as_array().unwrap_or(&empty);
    let filesystems = overview["filesystems"].as_array().unwrap_or(&empty);
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_string();
    let number = |v: &Value, key: &str| v[key].as_i64().unwrap_or(0);
    let content = html! {
        section.card {
            h2 { "File-system groups" }
            p.hint { "New objects go to the first read-write filesystem of group " strong { (text(&overview, "store_group")) } " that is above its free-space watermark. A group is every filesystem with its name." }
            table #groups {
                thead { tr { th { "Group" } th.num { "Filesystems" } th.wide { "Capacity" } th { "" } } }
                tbody {
                    @for group in groups {
                        @let total = number(group, "total_bytes");
                        @let free = number(group, "free_bytes");
                        tr {
                            td { (text(group, "name")) }
                            td.num { (number(group, "filesystems")) }
                            td { @if total > 0 { (bar(total - free, total, &format!("{} free of {}", bytes(free), bytes(total)))) } }
                            td { @if group["store_group"].as_bool() == Some(true) { span.badge.good { "receives new objects" } } }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Filesystems" }
            table #filesystems {
                thead { tr { th { "Path" } th { "Group" } th { "Mode" } th { "Min. free" } th.num { "Files" } th.wide { "Capacity" } th { "" } } }
                tbody {
                    @for fs in filesystems {
                        @let id = number(fs, "id");
                        @let total = number(fs, "total_bytes");
                        @let free = number(fs, "free_bytes");
                        @let from_config = fs["from_config"].as_bool() == Some(true);
                        tr data-path=(text(fs, "path")) {
                            td.path { (text(fs, "path")) }
                            @if from_config {
                                td { (text(fs, "group")) }
                                td { (badge(&text(fs, "mode"))) }
                                td { (bytes(number(fs, "min_free_bytes"))) }
                            } @else {
                                td colspan="3" {
                                    form.inline method="post" action={ "/ui/filesystems/" (id) } {
                                        (csrf_field(&session))
                                        input type="hidden" name="op" value="update";
                                        input name="group" value=(text(fs, "group")) size="14" aria-label="Group";
                                        select name="mode" aria-label="Mode" {
                                            option value="rw" selected[text(fs, "mode") == "rw"] { "read-write" }
                                            option value="ro" selected[text(fs, "mode") == "ro"] { "read-only" }
                                        }
                                        input name="min_free" value=(ByteSize(number(fs, "min_free_bytes") as u64).to_string()) size="8" aria-label="Minimum free space";
                                        button.secondary type="submit" { "Save" }
                                    }
                                }
                            }
                            td.num { (number(fs, "files")) div.muted { (bytes(number(fs, "bytes"))) } }
                            td { @if total > 0 { (bar(total - free, total, &format!("{} free of {}", bytes(free), bytes(total)))) } @else { span.muted { "not measurable" } } }
                            td.actions {
                                @if from_config {
                                    span.muted title="Defined in the config file (online.filesystems); change it there." { "from config" }
                                } @else {
                                    form method="post" action={ "/ui/filesystems/" (id) } data-confirm="Remove this filesystem from the archive? Only possible when the index points at no file on it." {
                                        (csrf_field(&session))
                                        input type="hidden" name="op" value="remove";
                                        button.danger type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Add a filesystem" }
            form.stacked #add-filesystem method="post" action="/ui/filesystems" {
                (csrf_field(&session))
                label { "Directory (absolute path)" input name="path" required placeholder="/srv/strata/online2"; }
                label { "Group" input name="group" value=(text(&overview, "store_group")); }
                label { "Mode"
                    select name="mode" { option value="rw" { "read-write" } option value="ro" { "read-only" } }
                }
                label { "Minimum free space" input name="min_free" value="1GiB"; }
                button type="submit" { "Add filesystem" }
            }
        }
    };
    signed_in_page("Filesystems", "/ui/filesystems", &session, &notice, content)
}

fn filesystem_body(form: &CheckedForm) -> Result<FilesystemBody, ApiError> {
    Ok(FilesystemBody {
        group: form.optional("group"),
        path: form.optional("path"),
        mode: form.optional("mode"),
        min_free: size_field(form, "min_free")?,
    })
}

pub async fn add_filesystem(State(state): State<WebState>, form: CheckedForm) -> Response {
    let outcome = match filesystem_body(&form) {
        Ok(body) => filesystems_api::add_filesystem(&state, body)
            .await
            .map(|fs| format!("Filesystem {} added to group {}.", fs.path, fs.group)),
        Err(error) => Err(error),
    };
    redirect_with("/ui/filesystems", outcome)
}

pub async fn change_filesystem(
    State(state): State<WebState>,
    Path(id): Path<String>,
    form: CheckedForm,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return redirect_with(
            "/ui/filesystems",
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such filesystem",
            )),
        );
    };
    let outcome = if form.text("op") == "remove" {
        filesystems_api::remove_filesystem(&state, id)
            .await
            .map(|()| "Filesystem removed.".to_string())
    } else {
        match filesystem_body(&form) {
            Ok(body) => filesystems_api::update_filesystem(&state, id, body)
                .await
                .map(|fs| format!("Filesystem {} saved ({}, {}).", fs.path, fs.group, fs.mode)),
            Err(error) => Err(error),
        }
    };
    redirect_with("/ui/filesystems", outcome)
}

pub async fn targets(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Response {
    let targets = match state.index.targets().await {
        Ok(targets) => targets,
        Err(error) => return error_page(&session, "Nearline targets", error.into()),
    };
    let content = html! {
        section.card {
            table #targets {
                thead { tr { th { "Name" } th { "Kind" } th { "Location" } th { "Storage class" } th { "Credentials" } th { "" } } }
                tbody {
                    @if targets.is_empty() { tr { td colspan="6" .muted { "No nearline target." } } }
                    @for target in &targets {
                        tr {
                            td { (target.spec.name) }
                            td { (format!("{:?}", target.spec.kind).to_lowercase()) }
                            td.path { (target.spec.location()) }
                            td { (target.spec.storage_class) }
                            td { @if target.spec.access_key_id_file.is_some() { "from files" } @else if target.spec.kind == archive_core::config::TargetKind::S3 { "AWS credential chain" } @else { "—" } }
                            td.actions {
                                @if target.from_config {
                                    span.muted title="Defined in the config file (nearline.targets); change it there." { "from config" }
                                } @else {
                                    form method="post" action={ "/ui/targets/" (target.spec.name) "/remove" } data-confirm="Remove this target? Only possible when it holds no pack and no copy rule names it." {
                                        (csrf_field(&session))
                                        button.danger type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Add or change a target" }
            p.hint { "Secrets never go through this page: S3 keys are read from files on each node (or the AWS credential chain) and are never shown." }
            form.stacked method="post" action="/ui/targets" {
                (csrf_field(&session))
                label { "Name" input name="name" required pattern="[A-Za-z0-9_.-]+"; }
                label { "Kind" select name="kind" { option value="filesystem" { "filesystem directory" } option value="s3" { "S3-compatible" } } }
                label { "Directory (filesystem)" input name="path" placeholder="/mnt/nearline"; }
                label { "Endpoint URL (S3)" input name="endpoint" placeholder="https://s3.example.org"; }
                label { "Region (S3)" input name="region" value="us-east-1"; }
                label { "Bucket (S3)" input name="bucket"; }
                label { "Key prefix (S3)" input name="prefix" placeholder="strata/"; }
                label { "Storage class (S3)" input name="storage_class" placeholder="bucket default"; }
                label { "Access key id file (S3)" input name="access_key_id_file" placeholder="/run/secrets/s3-key-id"; }
                label { "Secret key file (S3)" input name="secret_access_key_file" placeholder="/run/secrets/s3-secret"; }
                button type="submit" { "Save target" }
            }
        }
    };
    signed_in_page(
        "Nearline targets",
        "/ui/targets",
        &session,
        &notice,
        content,
    )
}

pub async fn save_target(State(state): State<WebState>, form: CheckedForm) -> Response {
    let outcome = async {
        let kind = match form.optional("kind").as_deref() {
            None | Some("filesystem") => TargetKind::Filesystem,
            Some("s3") => TargetKind::S3,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "kind",
                    format!("`{other}` is neither filesystem nor s3"),
                ))
            }
        };
        let mut spec = TargetSpec::filesystem(&form.text("name"), PathBuf::new());
        spec.kind = kind;
        spec.path = form.optional("path").map(PathBuf::from);
        spec.endpoint = form.text("endpoint");
        if let Some(region) = form.optional("region") {
            spec.region = region;
        }
        spec.bucket = form.text("bucket");
        spec.prefix = form.text("prefix");
        spec.storage_class = form.text("storage_class");
        spec.access_key_id_file = form.optional("access_key_id_file").map(PathBuf::from);
        spec.secret_access_key_file = form.optional("secret_access_key_file").map(PathBuf::from);
        settings_api::save_target(&state, spec).await
    }
    .await
    .map(|spec| format!("Target {} saved ({}).", spec.name, spec.location()));
    redirect_with("/ui/targets", outcome)
}

pub async fn remove_target(
    State(state): State<WebState>,
    Path(name): Path<String>,
    _form: CheckedForm,
) -> Response {
    let outcome = settings_api::remove(&state, archive_core::index::Setting::Target, &name)
        .await
        .map(|_| format!("Target {name} removed."));
    redirect_with("/ui/targets", outcome)
}
