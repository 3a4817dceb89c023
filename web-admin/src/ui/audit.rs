//! The audit trail page: the newest events first, filtered like `GET /api/audit`.

use super::widgets::{badge, time};
use super::{enc, error_page, signed_in_page, Notice, Session};
use crate::audit_api::AuditQuery;
use crate::WebState;
use archive_core::audit::{AuditAction, AuditOutcome};
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use maud::html;

pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(error) => return error_page(&session, "Audit trail", error),
    };
    let events = match state.index.list_audit_events(&filter).await {
        Ok(events) => events,
        Err(error) => return error_page(&session, "Audit trail", error.into()),
    };
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let action = text(&query.action);
    let outcome = text(&query.outcome);
    let next_page = events.last().map(|last| {
        format!(
            "/ui/audit?action={}&outcome={}&actor={}&study={}&patient={}&before={}",
            enc(&action),
            enc(&outcome),
            enc(&text(&query.actor)),
            enc(&text(&query.study)),
            enc(&text(&query.patient)),
            last.id
        )
    });
    let content = html! {
        form.card.filters method="get" action="/ui/audit" {
            label { "Action"
                select name="action" {
                    option value="" selected[action.is_empty()] { "any" }
                    @for option in AuditAction::ALL {
                        option value=(option) selected[action == option.as_str()] { (option) }
                    }
                }
            }
            label { "Outcome"
                select name="outcome" {
                    option value="" selected[outcome.is_empty()] { "any" }
                    @for option in AuditOutcome::ALL {
                        option value=(option) selected[outcome == option.as_str()] { (option) }
                    }
                }
            }
            label { "Who" input name="actor" value=(text(&query.actor)); }
            label { "Study UID" input name="study" value=(text(&query.study)); }
            label { "Patient ID" input name="patient" value=(text(&query.patient)); }
            button type="submit" { "Filter" }
        }
        section.card {
            table #audit {
                thead { tr { th { "When" } th { "Action" } th { "Outcome" } th { "Who" } th { "From" } th { "Study" } th { "Patient ID" } th { "What" } th { "Node" } } }
                tbody {
                    @for event in &events {
                        tr {
                            td { (time(event.at)) }
                            td { (event.action) }
                            td { (badge(event.outcome.as_str())) }
                            td { (event.actor) }
                            td { (event.peer) }
                            td.uid {
                                @if !event.study_uid.is_empty() {
                                    a href={ "/ui/studies/" (enc(&event.study_uid)) } { (event.study_uid) }
                                }
                            }
                            td { (event.patient_id) }
                            td { (event.detail) }
                            td { (event.node) }
                        }
                    }
                }
            }
            @if events.is_empty() { p.muted { "No events match." } }
            @if let Some(next) = next_page {
                @if events.len() as u32 >= filter.limit { p { a href=(next) { "Older events" } } }
            }
        }
    };
    signed_in_page(
        "Audit trail",
        "/ui/audit",
        &session,
        &Notice::default(),
        content,
    )
}
