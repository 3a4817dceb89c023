//! Copy rules and retention rules. A retention rule's page shows its form and, below it, the
//! dry run: what the next run would delete, and for every other study what holds it back.

use super::session::CheckedForm;
use super::widgets::{bytes, time};
use super::{csrf_field, enc, error_page, redirect_with, signed_in_page, Notice, Session};
use crate::api::ApiError;
use crate::settings_api;
use crate::WebState;
use archive_core::config::{CopyRuleConfig, RetentionRuleConfig};
use archive_core::index::Setting;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

/// `CT, MR` → `["CT", "MR"]`.
fn list_field(form: &CheckedForm, name: &str) -> Vec<String> {
    form.text(name)
        .split([',', ' ', '\\'])
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// A whole number if the field is filled in, or a 400 naming the field.
fn number_field<T: std::str::FromStr>(
    form: &CheckedForm,
    name: &str,
) -> Result<Option<T>, ApiError> {
    form.optional(name)
        .map(|text| {
            text.parse::<T>().map_err(|_| {
                ApiError::bad_request(name, format!("`{text}` is not a whole number in range"))
            })
        })
        .transpose()
}

pub async fn list(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Response {
    let loaded = async {
        Ok::<_, ApiError>((
            state.index.copy_rules().await?,
            state.index.retention_rules().await?,
            state.index.targets().await?,
        ))
    };
    let (copy_rules, retention_rules, targets) = match loaded.await {
        Ok(all) => all,
        Err(error) => return error_page(&session, "Rules", error),
    };
    let content = html! {
        section.card {
            h2 { "Retention rules" }
            p.hint { "Whatever a rule says, a study's ONLINE files are deleted only when every instance has a verified (ARCHIVED) nearline copy." }
            table #retention-rules {
                thead { tr { th { "Name" } th { "Group" } th { "Schedule" } th { "Selects" } th { "Enabled" } th { "" } } }
                tbody {
                    @if retention_rules.is_empty() { tr { td colspan="6" .muted { "No retention rule: ONLINE files are never deleted." } } }
                    @for rule in &retention_rules {
                        tr {
                            td { a href={ "/ui/rules/retention/" (enc(&rule.name)) } { (rule.name) } }
                            td { (rule.group) } td { code { (rule.schedule) } }
                            td { (describe_retention(rule)) }
                            td { @if rule.enabled { "yes" } @else { "no" } }
                            td.actions { a.button href={ "/ui/rules/retention/" (enc(&rule.name)) } { "Edit & preview" } }
                        }
                    }
                }
            }
            p { a.button href="/ui/rules/retention/new" { "New retention rule" } }
        }
        section.card {
            h2 { "Copy rules" }
            table #copy-rules {
                thead { tr { th { "Name" } th { "Target" } th { "Schedule" } th { "Stable for" } th { "Filters" } th { "Enabled" } th { "" } } }
                tbody {
                    @if copy_rules.is_empty() { tr { td colspan="7" .muted { "No copy rule: studies are copied only on request." } } }
                    @for entry in &copy_rules {
                        @let rule = &entry.rule;
                        tr {
                            td { (rule.name) } td { (rule.target_names().join(", ")) } td { code { (rule.schedule) } }
                            td { (rule.stable_minutes) " min" }
                            td { (filters(&rule.modalities, &rule.calling_aes, rule.min_age_days)) }
                            td { @if rule.enabled { "yes" } @else { "no" } }
                            td.actions {
                                @if entry.from_config { span.muted { "from config" } } @else {
                                    form method="post" action={ "/ui/rules/copy/" (enc(&rule.name)) "/remove" } data-confirm="Remove this copy rule?" {
                                        (csrf_field(&session)) button.danger type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Add or change a copy rule" }
            form.stacked method="post" action="/ui/rules" {
                (csrf_field(&session))
                label { "Name" input name="name" required; }
                label { "Target" select name="target" { @for t in &targets { option value=(t.spec.name) { (t.spec.name) } } } }
                label { "Schedule (cron)" input name="schedule" value="*/5 * * * *" required; }
                label { "Stable for (minutes without new instances)" input name="stable_minutes" value="10"; }
                label { "Minimum study age (days)" input name="min_age_days" value="0"; }
                label { "Modalities (comma-separated, empty = any)" input name="modalities"; }
                label { "Calling AE titles (empty = any)" input name="calling_aes"; }
                label.check { input type="checkbox" name="enabled" checked; "Enabled" }
                button type="submit" { "Save copy rule" }
            }
        }
    };
    signed_in_page("Rules", "/ui/rules", &session, &notice, content)
}

fn filters(modalities: &[String], calling_aes: &[String], min_age_days: u32) -> String {
    let mut parts = Vec::new();
    if !modalities.is_empty() {
        parts.push(format!("modality {}", modalities.join("/")));
    }
    if !calling_aes.is_empty() {
        parts.push(format!("from {}", calling_aes.join("/")));
    }
    if min_age_days > 0 {
        parts.push(format!("≥ {min_age_days} days old"));
    }
    if parts.is_empty() {
        "all studies".into()
    } else {
        parts.join(", ")
    }
}

fn describe_retention(rule: &RetentionRuleConfig) -> String {
    let mut parts = Vec::new();
    if let Some(days) = rule.not_accessed_days {
        parts.push(format!("not accessed for {days} days"));
    }
    if let (Some(below), Some(target)) = (rule.free_below_percent, rule.free_target_percent) {
        parts.push(format!("free space below {below}% (until {target}%)"));
    }
    let filter = filters(&rule.modalities, &rule.calling_aes, rule.min_study_age_days);
    format!("{}; {filter}", parts.join(" or "))
}

pub async fn save_copy_rule(State(state): State<WebState>, form: CheckedForm) -> Response {
    let outcome = async {
        let defaults = CopyRuleConfig::default();
        let rule = CopyRuleConfig {
            name: form.text("name"),
            target: form.text("target"),
            targets: Vec::new(),
            schedule: form.text("schedule"),
            stable_minutes: number_field(&form, "stable_minutes")?
                .unwrap_or(defaults.stable_minutes),
            min_age_days: number_field(&form, "min_age_days")?.unwrap_or(defaults.min_age_days),
            modalities: list_field(&form, "modalities"),
            calling_aes: list_field(&form, "calling_aes"),
            enabled: form.checked("enabled"),
        };
        settings_api::save_copy_rule(&state, rule).await
    }
    .await
    .map(|rule| format!("Copy rule {} saved.", rule.name));
    redirect_with("/ui/rules", outcome)
}

pub async fn remove_copy_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
    _form: CheckedForm,
) -> Response {
    let outcome = settings_api::remove(&state, Setting::CopyRule, &name)
        .await
        .map(|_| format!("Copy rule {name} removed."));
    redirect_with("/ui/rules", outcome)
}

pub async fn remove_retention_rule(
    State(state): State<WebState>,
    Path(name): Path<String>,
    _form: CheckedForm,
) -> Response {
    let outcome = settings_api::remove(&state, Setting::RetentionRule, &name)
        .await
        .map(|_| format!("Retention rule {name} removed."));
    redirect_with("/ui/rules", outcome)
}

fn retention_form(session: &Session, rule: &RetentionRuleConfig, is_new: bool) -> Markup {
    let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
    let opt8 = |v: Option<u8>| v.map(|n| n.to_string()).unwrap_or_default();
    html! {
        form.stacked #retention-form method="post" action="/ui/rules/retention" {
            (csrf_field(session))
            @if is_new {
                label { "Name" input name="name" required pattern="[A-Za-z0-9_.-]+"; }
            } @else {
                input type="hidden" name="name" value=(rule.name);
            }
            label { "File-system group" input name="group" value=(rule.group); }
            label { "Schedule (cron)" input name="schedule" value=(rule.schedule) required; }
            label { "Delete studies not accessed for (days)" input name="not_accessed_days" value=(opt(rule.not_accessed_days)); }
            label { "…or when free space is below (%)" input name="free_below_percent" value=(opt8(rule.free_below_percent)); }
            label { "…until free space is (%)" input name="free_target_percent" value=(opt8(rule.free_target_percent)); }
            label { "Never studies younger than (days)" input name="min_study_age_days" value=(rule.min_study_age_days); }
            label { "Modalities (empty = any)" input name="modalities" value=(rule.modalities.join(", ")); }
            label { "Calling AE titles (empty = any)" input name="calling_aes" value=(rule.calling_aes.join(", ")); }
            label { "Only with a verified copy on target (empty = any)" input name="require_target" value=(rule.require_target); }
            label.check { input type="checkbox" name="enabled" checked[rule.enabled]; "Enabled" }
            button type="submit" { "Save and preview" }
        }
    }
}

pub async fn retention_rule(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    if name == "new" {
        // What the form suggests: nightly, studies not accessed for 90 days.
        let blank = RetentionRuleConfig {
            schedule: "0 3 * * *".into(),
            not_accessed_days: Some(90),
            ..RetentionRuleConfig::default()
        };
        let content = html! { section.card { (retention_form(&session, &blank, true)) } };
        return signed_in_page(
            "New retention rule",
            "/ui/rules",
            &session,
            &notice,
            content,
        );
    }
    let rules = match state.index.retention_rules().await {
        Ok(rules) => rules,
        Err(error) => return error_page(&session, "Retention rule", error.into()),
    };
    let Some(rule) = rules.into_iter().find(|r| r.name == name) else {
        return error_page(
            &session,
            "Retention rule",
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no retention rule named `{name}`"),
            ),
        );
    };
    let preview = match archive_core::retention::preview(&state.index, &rule).await {
        Ok(preview) => preview,
        Err(error) => return error_page(&session, "Retention rule", error.into()),
    };
    let deleting = preview.iter().filter(|e| e.delete).count();
    let freed: i64 = preview
        .iter()
        .filter(|e| e.delete)
        .map(|e| e.online_bytes)
        .sum();
    let content = html! {
        div.grid {
            section.card { h2 { "Rule" } (retention_form(&session, &rule, false)) }
            section.card #preview {
                h2 { "Preview: the next run" }
                p.summary { "Would delete the ONLINE copy of " strong { (deleting) } " of " (preview.len()) " candidate studies, freeing " (bytes(freed)) "." }
                table {
                    thead { tr { th { "Study" } th.num { "ONLINE size" } th { "Last accessed" } th { "Decision" } th { "Why" } } }
                    tbody {
                        @if preview.is_empty() { tr { td colspan="5" .muted { "No ONLINE study in this group." } } }
                        @for entry in &preview {
                            tr class=(if entry.delete { "delete" } else { "kept" }) {
                                td.uid { a href={ "/ui/studies/" (entry.study_uid) } { (entry.study_uid) } }
                                td.num { (bytes(entry.online_bytes)) }
                                td { (time(entry.last_accessed_at)) }
                                td { @if entry.delete { span.badge.bad { "delete" } } @else { span.badge.neutral { "keep" } } }
                                td { ul.reasons { @for reason in &entry.reasons { li { (reason) } } } }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action={ "/ui/rules/retention/" (enc(&rule.name)) "/remove" } data-confirm="Remove this retention rule?" {
            (csrf_field(&session)) button.danger type="submit" { "Remove rule" }
        }
    };
    signed_in_page(
        &format!("Retention rule {}", rule.name),
        "/ui/rules",
        &session,
        &notice,
        content,
    )
}

pub async fn save_retention_rule(State(state): State<WebState>, form: CheckedForm) -> Response {
    let name = form.text("name");
    let outcome = async {
        let mut rule = RetentionRuleConfig {
            name: name.clone(),
            schedule: form.text("schedule"),
            require_target: form.text("require_target"),
            enabled: form.checked("enabled"),
            ..RetentionRuleConfig::default()
        };
        if let Some(group) = form.optional("group") {
            rule.group = group;
        }
        rule.not_accessed_days = number_field(&form, "not_accessed_days")?;
        rule.free_below_percent = number_field(&form, "free_below_percent")?;
        rule.free_target_percent = number_field(&form, "free_target_percent")?;
        if let Some(age) = number_field(&form, "min_study_age_days")? {
            rule.min_study_age_days = age;
        }
        rule.modalities = list_field(&form, "modalities");
        rule.calling_aes = list_field(&form, "calling_aes");
        settings_api::save_retention_rule(&state, rule).await
    }
    .await;
    match outcome {
        Ok(rule) => redirect_with(
            &format!("/ui/rules/retention/{}", enc(&rule.name)),
            Ok(format!("Retention rule {} saved.", rule.name)),
        ),
        Err(error) if name.is_empty() => redirect_with("/ui/rules/retention/new", Err(error)),
        Err(error) => {
            // An existing rule's page shows its saved state with the error; a new rule's name
            // does not exist yet, so its form comes back.
            let exists = state
                .index
                .retention_rules()
                .await
                .map(|r| r.iter().any(|r| r.name == name))
                .unwrap_or(false);
            let back = if exists {
                format!("/ui/rules/retention/{}", enc(&name))
            } else {
                "/ui/rules/retention/new".into()
            };
            redirect_with(&back, Err(error))
        }
    }
}
