//! The dashboard: capacity per filesystem, studies by availability, jobs under way.

use super::widgets::{badge, bar, bytes, job_progress, time};
use super::{error_page, signed_in_page, Notice, Session};
use crate::api::ApiResult;
use crate::WebState;
use archive_core::jobs::{JobFilter, JobState};
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use maud::{html, Markup};

pub async fn page_content(state: &WebState) -> ApiResult<Markup> {
    let storage = crate::filesystems_api::overview(state).await?;
    let totals = state.index.availability_totals().await?;
    let job_totals = state.index.job_totals().await?;
    let mut live = state
        .index
        .list_jobs(&JobFilter {
            state: Some(JobState::Running),
            job_type: None,
            study_uid: None,
            limit: 20,
        })
        .await?;
    live.extend(
        state
            .index
            .list_jobs(&JobFilter {
                state: Some(JobState::Queued),
                job_type: None,
                study_uid: None,
                limit: 20,
            })
            .await?,
    );
    let empty = Vec::new();
    let filesystems = storage["filesystems"].as_array().unwrap_or(&empty);
    Ok(html! {
        div.grid {
            section.card {
                h2 { "Capacity" }
                table {
                    thead { tr { th { "Filesystem" } th { "Group" } th { "Mode" } th.wide { "Used" } } }
                    tbody {
                        @for fs in filesystems {
                            @let total = fs["total_bytes"].as_i64().unwrap_or(0);
                            @let free = fs["free_bytes"].as_i64().unwrap_or(0);
                            tr {
                                td.path { (fs["path"].as_str().unwrap_or("")) }
                                td { (fs["group"].as_str().unwrap_or("")) }
                                td { (badge(fs["mode"].as_str().unwrap_or(""))) }
                                td {
                                    @if total > 0 {
                                        (bar(total - free, total, &format!("{} free of {}", bytes(free), bytes(total))))
                                    } @else { span.muted { "not measurable" } }
                                }
                            }
                        }
                    }
                }
                p { a href="/ui/filesystems" { "Manage filesystems →" } }
            }
            section.card {
                h2 { "Studies by availability" }
                table {
                    thead { tr { th { "Availability" } th.num { "Studies" } th.num { "Instances" } th.num { "Size" } } }
                    tbody {
                        @if totals.is_empty() { tr { td colspan="4" .muted { "No studies yet." } } }
                        @for total in &totals {
                            tr {
                                td { a href={ "/ui/studies?availability=" (total.availability) } { (badge(total.availability.as_str())) } }
                                td.num { (total.studies) } td.num { (total.instances) } td.num { (bytes(total.bytes)) }
                            }
                        }
                    }
                }
                h2 { "Jobs" }
                p {
                    @for total in &job_totals {
                        a.stat href={ "/ui/jobs?state=" (total.state) } { (badge(total.state.as_str())) " " (total.jobs) }
                    }
                    @if job_totals.is_empty() { span.muted { "No jobs yet." } }
                }
            }
        }
        section.card #live data-refresh="3000" {
            h2 { "Jobs under way" }
            @if live.is_empty() {
                p.muted { "Nothing running or queued." }
            } @else {
                table {
                    thead { tr { th { "Job" } th { "Type" } th { "Study" } th { "State" } th.wide { "Progress" } th { "Node" } th { "Since" } } }
                    tbody {
                        @for job in &live {
                            tr {
                                td { a href={ "/ui/jobs?study=" (job.study_uid) } { "#" (job.id) } }
                                td { (job.job_type) }
                                td.uid { a href={ "/ui/studies/" (job.study_uid) } { (job.study_uid) } }
                                td { (badge(job.state.as_str())) }
                                td { (job_progress(job)) }
                                td { (job.owner_node) }
                                td { (time(job.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    })
}

pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Response {
    match page_content(&state).await {
        Ok(content) => signed_in_page("Dashboard", "/ui/", &session, &notice, content),
        Err(error) => error_page(&session, "Dashboard", error),
    }
}
