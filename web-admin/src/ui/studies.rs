//! Studies (search, detail with availability and every copy, actions) and jobs (filter,
//! progress, retry, cancel).

use super::session::CheckedForm;
use super::widgets::{badge, bytes, dicom_date, dicom_time, job_progress, person_name, time};
use super::{csrf_field, enc, error_page, redirect_with, signed_in_page, Notice, Session};
use crate::api::{self, ApiResult};
use crate::WebState;
use archive_core::index::StudySearch;
use archive_core::jobs::{Job, JobFilter, JobState, JobType};
use archive_core::model::Availability;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

const PAGE_SIZE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    patient_name: String,
    #[serde(default)]
    date_from: String,
    #[serde(default)]
    date_to: String,
    #[serde(default)]
    modality: String,
    #[serde(default)]
    accession_number: String,
    #[serde(default)]
    availability: String,
    #[serde(default)]
    offset: i64,
    ok: Option<String>,
    error: Option<String>,
}

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// `2024-03-15` (a date input) or `20240315` as DICOM DA.
fn form_date(text: &str) -> Option<String> {
    given(text).map(|t| t.replace('-', ""))
}

pub async fn search(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(form): Query<SearchForm>,
) -> Response {
    let mut notice = Notice {
        ok: form.ok.clone(),
        error: form.error.clone(),
    };
    let dates_valid = [&form.date_from, &form.date_to].iter().all(|d| {
        form_date(d).is_none_or(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
    });
    let search = StudySearch {
        patient_id: given(&form.patient_id),
        patient_name: given(&form.patient_name),
        date_from: form_date(&form.date_from),
        date_to: form_date(&form.date_to),
        modality: given(&form.modality).map(|m| m.to_ascii_uppercase()),
        accession_number: given(&form.accession_number),
        // The form offers the valid values only; a hand-made URL with another means "any".
        availability: given(&form.availability).and_then(|a| a.parse().ok()),
        limit: PAGE_SIZE + 1,
        offset: form.offset.max(0),
    };
    let studies = if dates_valid {
        match state.index.search_studies(&search).await {
            Ok(studies) => studies,
            Err(error) => return error_page(&session, "Studies", error.into()),
        }
    } else {
        notice.error = Some("Dates are written like 2024-03-15.".into());
        Vec::new()
    };
    let more = studies.len() as i64 > PAGE_SIZE;
    let shown = &studies[..studies.len().min(PAGE_SIZE as usize)];
    let query_without_offset = format!(
        "patient_id={}&patient_name={}&date_from={}&date_to={}&modality={}&accession_number={}&availability={}",
        enc(&form.patient_id), enc(&form.patient_name), enc(&form.date_from), enc(&form.date_to),
        enc(&form.modality), enc(&form.accession_number), enc(&form.availability)
    );
    let content = html! {
        form.card.filters method="get" action="/ui/studies" {
            label { "Patient ID" input name="patient_id" value=(form.patient_id); }
            label { "Patient name" input name="patient_name" value=(form.patient_name) placeholder="DOE*"; }
            label { "Study date from" input type="date" name="date_from" value=(form.date_from); }
            label { "to" input type="date" name="date_to" value=(form.date_to); }
            label { "Modality" input name="modality" value=(form.modality) size="4"; }
            label { "Accession" input name="accession_number" value=(form.accession_number); }
            label { "Availability"
                select name="availability" {
                    @for option in std::iter::once("").chain(Availability::ALL.iter().map(|a| a.as_str())) {
                        option value=(option) selected[form.availability == option] { @if option.is_empty() { "any" } @else { (option) } }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        section.card {
            table #studies {
                thead { tr { th { "Patient" } th { "Patient ID" } th { "Study date" } th { "Modalities" } th { "Description" } th.num { "Series" } th.num { "Instances" } th.num { "Size" } th { "Availability" } } }
                tbody {
                    @if shown.is_empty() { tr { td colspan="9" .muted { "No study matches." } } }
                    @for study in shown {
                        tr {
                            td { a href={ "/ui/studies/" (study.study_uid) } { (person_name(&study.patient_name)) @if study.patient_name.is_empty() { "(no name)" } } }
                            td { (study.patient_id) }
                            td { (dicom_date(&study.study_date)) }
                            td { (study.modalities.replace('\\', ", ")) }
                            td { (study.description) }
                            td.num { (study.num_series) } td.num { (study.num_instances) } td.num { (bytes(study.size_bytes)) }
                            td { (badge(study.availability.as_str())) }
                        }
                    }
                }
            }
            p.pager {
                @if search.offset > 0 {
                    a href={ "/ui/studies?" (query_without_offset) "&offset=" ((search.offset - PAGE_SIZE).max(0)) } { "← Previous" }
                }
                @if more {
                    a href={ "/ui/studies?" (query_without_offset) "&offset=" (search.offset + PAGE_SIZE) } { "Next →" }
                }
            }
        }
    };
    signed_in_page("Studies", "/ui/studies", &session, &notice, content)
}

fn jobs_table(jobs: &[Job], session: &Session, back: &str) -> Markup {
    html! {
        table.jobs {
            thead { tr { th { "Job" } th { "Type" } th { "Study" } th { "Target" } th { "State" } th.wide { "Progress" } th.num { "Attempts" } th { "Created" } th { "Updated" } th { "" } } }
            tbody {
                @if jobs.is_empty() { tr { td colspan="10" .muted { "No jobs." } } }
                @for job in jobs {
                    tr data-job=(job.id) data-state=(job.state) {
                        td { "#" (job.id) }
                        td { (job.job_type) }
                        td.uid { a href={ "/ui/studies/" (job.study_uid) } { (job.study_uid) } }
                        td { (job.target_name) }
                        td { (badge(job.state.as_str()))
                            @if !job.last_error.is_empty() { div.error-text { (job.last_error) } } }
                        td { (job_progress(job)) }
                        td.num { (job.attempts) " / " (job.max_attempts) }
                        td { (time(job.created_at)) div.muted { (job.created_by) } }
                        td { (time(job.updated_at)) @if !job.owner_node.is_empty() { div.muted { (job.owner_node) } } }
                        td.actions {
                            @if !job.state.is_final() {
                                form method="post" action={ "/ui/jobs/" (job.id) "/cancel" } data-confirm={ "Cancel job #" (job.id) "?" } {
                                    (csrf_field(session)) input type="hidden" name="back" value=(back);
                                    button.secondary type="submit" { "Cancel" }
                                }
                            }
                            @if matches!(job.state, JobState::Failed | JobState::Cancelled) {
                                form method="post" action={ "/ui/jobs/" (job.id) "/retry" } {
                                    (csrf_field(session)) input type="hidden" name="back" value=(back);
                                    button.secondary type="submit" { "Retry" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn detail_content(state: &WebState, session: &Session, uid: &str) -> ApiResult<Markup> {
    let study = api::study_or_404(state, uid).await?;
    let series = state.index.series_of_study(uid).await?;
    let online = state.index.online_copies(uid).await?;
    let packs = state.index.packs_of_study(uid).await?;
    let fixity = state.index.fixity_of_study(uid).await?;
    // The last fixity check of a copy, for its row: when, and whether it ever failed.
    let last_check = |copy: &str| -> String {
        match fixity.iter().find(|f| f.copy == copy) {
            Some(f) => {
                let when = f.checked_at.map(time).unwrap_or_else(|| "not yet".into());
                if f.failures > 0 {
                    format!("{when} ({} failed)", f.failures)
                } else {
                    when
                }
            }
            None => "—".into(),
        }
    };
    let targets = state.index.targets().await?;
    let jobs = state
        .index
        .list_jobs(&JobFilter {
            state: None,
            job_type: None,
            study_uid: Some(uid.to_string()),
            limit: 20,
        })
        .await?;
    let back = format!("/ui/studies/{uid}");
    let target_select = html! {
        select name="target" {
            @for target in &targets { option value=(target.spec.name) { (target.spec.name) } }
        }
    };
    Ok(html! {
        div.grid {
            section.card {
                h2 { (person_name(&study.patient_name)) " " span.muted { (study.patient_id) } }
                dl {
                    dt { "Availability" } dd #availability { (badge(study.availability.as_str())) }
                    dt { "Study date" } dd { (dicom_date(&study.study_date)) " " (dicom_time(&study.study_time)) }
                    dt { "Description" } dd { (study.description) }
                    dt { "Accession number" } dd { (study.accession_number) }
                    dt { "Modalities" } dd { (study.modalities.replace('\\', ", ")) }
                    dt { "Instances" } dd { (study.num_instances) " in " (study.num_series) " series, " (bytes(study.size_bytes)) }
                    dt { "Study Instance UID" } dd.uid { (study.study_uid) }
                }
                @if state.viewer_enabled {
                    p { a.button href=(format!("{}/viewer?StudyInstanceUIDs={}", crate::viewer::MOUNT, study.study_uid)) target="_blank" { "Open in viewer" } }
                }
            }
            section.card.actions-card {
                h2 { "Actions" }
                @if targets.is_empty() {
                    p.muted { "No nearline target is configured: add one under Nearline targets to copy studies." }
                } @else {
                    form.inline method="post" action={ "/ui/studies/" (uid) "/copy" } {
                        (csrf_field(session)) (target_select)
                        button type="submit" { "Copy to nearline" }
                    }
                    form.inline method="post" action={ "/ui/studies/" (uid) "/verify" } {
                        (csrf_field(session)) (target_select)
                        button.secondary type="submit" { "Verify copy" }
                    }
                }
                form.inline method="post" action={ "/ui/studies/" (uid) "/delete-online" } data-confirm="Delete the ONLINE files of this study? Only done when every instance has a verified nearline copy." {
                    (csrf_field(session))
                    button.danger type="submit" { "Delete ONLINE copy" }
                }
                form.inline method="post" action={ "/ui/studies/" (uid) "/restore" } {
                    (csrf_field(session))
                    button.secondary type="submit" { "Restore to ONLINE" }
                }
            }
        }
        section.card #live data-refresh="2000" {
            h2 { "Copies" }
            table #copies {
                thead { tr { th { "Tier" } th { "Where" } th { "Status" } th.num { "Instances" } th.num { "Size" } th { "Verified" } th { "Last fixity check" } } }
                tbody {
                    @if online.is_empty() && packs.is_empty() { tr { td colspan="7" .muted { "No copy: the study's files are gone." } } }
                    @for copy in &online {
                        tr {
                            td { (badge("ONLINE")) }
                            td.path { (copy.group_name) ": " (copy.path) }
                            td { "OK" }
                            td.num { (copy.instances) } td.num { (bytes(copy.bytes)) } td { "—" }
                            td { (last_check("ONLINE")) }
                        }
                    }
                    @for pack in &packs {
                        tr {
                            td { (badge("NEARLINE")) }
                            td.path { (pack.target_name) ": " (pack.object_key) }
                            td { (badge(pack.status.as_str())) @if !pack.error.is_empty() { div.error-text { (pack.error) } } }
                            td.num { (pack.member_count) } td.num { (bytes(pack.size_bytes)) }
                            td { (pack.verified_at.map(time).unwrap_or_else(|| "—".into())) }
                            td { (last_check(&format!("pack {}", pack.id))) }
                        }
                    }
                }
            }
            h2 { "Jobs" }
            (jobs_table(&jobs, session, &back))
        }
        section.card {
            h2 { "Series" }
            table {
                thead { tr { th.num { "#" } th { "Modality" } th { "Description" } th { "Body part" } th { "Sent by" } th.num { "Instances" } th.num { "Size" } th { "Availability" } } }
                tbody {
                    @for s in &series {
                        tr {
                            td.num { (s.series_number.map(|n| n.to_string()).unwrap_or_default()) }
                            td { (s.modality) } td { (s.description) } td { (s.body_part) } td { (s.source_ae) }
                            td.num { (s.num_instances) } td.num { (bytes(s.size_bytes)) } td { (badge(s.availability.as_str())) }
                        }
                    }
                }
            }
        }
    })
}

pub async fn detail(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(uid): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    match detail_content(&state, &session, &uid).await {
        Ok(content) => signed_in_page("Study", "/ui/studies", &session, &notice, content),
        Err(error) => error_page(&session, "Study", error),
    }
}

pub async fn action(
    State(state): State<WebState>,
    Path((uid, action)): Path<(String, String)>,
    form: CheckedForm,
) -> Response {
    let outcome = api::enqueue_action(&state, &uid, &action, form.optional("target"))
        .await
        .map(|(job, created)| {
            if created {
                format!("Job #{} ({}) queued.", job.id, job.job_type)
            } else {
                format!("Job #{} ({}) was already queued.", job.id, job.job_type)
            }
        });
    redirect_with(&format!("/ui/studies/{}", enc(&uid)), outcome)
}

#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default, rename = "type")]
    job_type: String,
    #[serde(default)]
    study: String,
    ok: Option<String>,
    error: Option<String>,
}

pub async fn jobs(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(query): Query<JobsQuery>,
) -> Response {
    let notice = Notice {
        ok: query.ok.clone(),
        error: query.error.clone(),
    };
    let filter = JobFilter {
        state: given(&query.state).and_then(|s| s.parse().ok()),
        job_type: given(&query.job_type).and_then(|t| t.parse().ok()),
        study_uid: given(&query.study),
        limit: 200,
    };
    let jobs = match state.index.list_jobs(&filter).await {
        Ok(jobs) => jobs,
        Err(error) => return error_page(&session, "Jobs", error.into()),
    };
    let back = format!(
        "/ui/jobs?state={}&type={}&study={}",
        enc(&query.state),
        enc(&query.job_type),
        enc(&query.study)
    );
    let content = html! {
        form.card.filters method="get" action="/ui/jobs" {
            label { "State"
                select name="state" {
                    option value="" selected[query.state.is_empty()] { "any" }
                    @for option in JobState::ALL {
                        option value=(option) selected[query.state == option.as_str()] { (option) }
                    }
                }
            }
            label { "Type"
                select name="type" {
                    option value="" selected[query.job_type.is_empty()] { "any" }
                    @for option in JobType::ALL {
                        option value=(option) selected[query.job_type == option.as_str()] { (option) }
                    }
                }
            }
            label { "Study UID" input name="study" value=(query.study); }
            button type="submit" { "Filter" }
        }
        section.card #live data-refresh="2000" {
            (jobs_table(&jobs, &session, &back))
        }
    };
    signed_in_page("Jobs", "/ui/jobs", &session, &notice, content)
}

pub async fn job_action(
    State(state): State<WebState>,
    Path((id, action)): Path<(String, String)>,
    form: CheckedForm,
) -> Response {
    let back = form.text("back");
    let back = if back.starts_with("/ui/") {
        back
    } else {
        "/ui/jobs".into()
    };
    let outcome = match (id.parse::<i64>(), action.as_str()) {
        (Ok(id), "cancel") => api::cancel(&state, id)
            .await
            .map(|_| format!("Job #{id} cancelled.")),
        (Ok(id), "retry") => api::retry(&state, id)
            .await
            .map(|_| format!("Job #{id} queued again.")),
        _ => Err(crate::api::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such job action",
        )),
    };
    redirect_with(&back, outcome)
}
