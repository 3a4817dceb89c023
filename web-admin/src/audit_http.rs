//! HTTP requests in the audit trail: every DICOMweb request (QIDO-RS as a query, WADO as an
//! access, STOW-RS as a store), every REST API or admin UI request that changes something
//! (settings as CONFIG, actions on studies and jobs as API), and UI logins (in the login
//! handler). Reads of the API and UI pages are not events.
//!
//! Who made the request is told by the credential checks: they put an [`Actor`] into the
//! response's extensions, which this layer, outside them, reads back.

use crate::WebState;
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;

/// Who a request's credentials belong to: `admin`, `viewer:<token file name>`, `ui`.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

/// Marks `response` as made for `actor`.
pub(crate) fn with_actor(mut response: Response, actor: &str) -> Response {
    response.extensions_mut().insert(Actor(actor.to_string()));
    response
}

/// The client's address, when the listener recorded it.
pub(crate) fn client_address(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_string())
        .unwrap_or_default()
}

pub(crate) async fn audit_requests(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    let Some((action, study_uid)) = classify(
        request.method(),
        request.uri().path(),
        request.uri().query().unwrap_or(""),
        &state.dicomweb.base,
    ) else {
        return next.run(request).await;
    };
    let peer = client_address(&request);
    let described = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    let actor = response
        .extensions()
        .get::<Actor>()
        .map(|Actor(name)| name.clone())
        .unwrap_or_else(|| "anonymous".into());
    let event = NewAuditEvent::new(action, AuditOutcome::of(status.as_u16() < 400), actor)
        .peer(peer)
        .study(study_uid)
        .detail(format!("{described}: {}", status.as_u16()));
    if status.as_u16() == 401 || status.as_u16() == 403 {
        // Anyone can cause refusals in bulk: never let them slow the server down.
        state.auditor.record_unless_busy(event);
    } else {
        state.auditor.record(event).await;
    }
    response
}

/// The audit action of a request, and the study it names (empty if none); `None` for
/// requests that are not audit events.
pub(crate) fn classify(
    method: &Method,
    path: &str,
    query: &str,
    dicomweb_base: &str,
) -> Option<(AuditAction, String)> {
    if *method == Method::OPTIONS || *method == Method::HEAD {
        return None;
    }
    if path == "/wado" {
        let study = form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "studyUID")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        return Some((AuditAction::DicomWeb, study));
    }
    if let Some(rest) = path.strip_prefix(dicomweb_base) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let study = study_in(rest);
        let action = if *method == Method::POST {
            AuditAction::Store
        } else if is_qido(rest) {
            AuditAction::Query
        } else {
            AuditAction::DicomWeb
        };
        return Some((action, study));
    }
    if *method == Method::GET {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/api") {
        let action = if rest.starts_with("/studies/") || rest.starts_with("/jobs/") {
            AuditAction::Api
        } else {
            AuditAction::Config
        };
        return Some((action, study_in(rest)));
    }
    if let Some(rest) = path.strip_prefix("/ui") {
        // The login handler records logins itself (it knows whether the token matched).
        if rest == "/login" {
            return None;
        }
        let action = if rest.starts_with("/studies/") || rest.starts_with("/jobs") {
            AuditAction::Api
        } else {
            AuditAction::Config
        };
        return Some((action, study_in(rest)));
    }
    None
}

/// QIDO-RS searches: `/studies`, `/series`, `/instances`, and a study's or series' lists.
fn is_qido(rest: &str) -> bool {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["studies" | "series" | "instances"]
            | ["studies", _, "series" | "instances"]
            | ["studies", _, "series", _, "instances"]
    )
}

/// The path segment after `studies/`, percent-decoded; empty if there is none.
fn study_in(path: &str) -> String {
    let mut parts = path.split('/');
    while let Some(part) = parts.next() {
        if part == "studies" {
            let uid = parts.next().unwrap_or("");
            return form_urlencoded::parse(format!("u={uid}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: Method, path: &str, query: &str) -> Option<(AuditAction, String)> {
        classify(&method, path, query, "/dicom-web")
    }

    #[test]
    fn dicomweb_requests_are_classified_with_their_study() {
        assert_eq!(
            class(Method::GET, "/dicom-web/studies", "PatientID=1"),
            Some((AuditAction::Query, String::new()))
        );
        assert_eq!(
            class(Method::GET, "/dicom-web/studies/1.2/series", ""),
            Some((AuditAction::Query, "1.2".into()))
        );
        assert_eq!(
            class(Method::GET, "/dicom-web/studies/1.2/series/3/metadata", ""),
            Some((AuditAction::DicomWeb, "1.2".into()))
        );
        assert_eq!(
            class(Method::POST, "/dicom-web/studies", ""),
            Some((AuditAction::Store, String::new()))
        );
        assert_eq!(
            class(
                Method::GET,
                "/wado",
                "requestType=WADO&studyUID=1.9&seriesUID=2"
            ),
            Some((AuditAction::DicomWeb, "1.9".into()))
        );
        assert_eq!(class(Method::OPTIONS, "/dicom-web/studies", ""), None);
        assert_eq!(class(Method::GET, "/dicom-webby/studies", ""), None);
    }

    #[test]
    fn only_changes_of_api_and_ui_are_events() {
        assert_eq!(class(Method::GET, "/api/studies/1.2", ""), None);
        assert_eq!(class(Method::GET, "/ui/studies", ""), None);
        assert_eq!(
            class(Method::POST, "/api/studies/1.2/delete", ""),
            Some((AuditAction::Api, "1.2".into()))
        );
        assert_eq!(
            class(Method::PUT, "/api/ae-titles/CT1", ""),
            Some((AuditAction::Config, String::new()))
        );
        assert_eq!(
            class(Method::DELETE, "/api/filesystems/3", ""),
            Some((AuditAction::Config, String::new()))
        );
        assert_eq!(class(Method::POST, "/ui/login", ""), None);
        assert_eq!(
            class(Method::POST, "/ui/peers", ""),
            Some((AuditAction::Config, String::new()))
        );
    }
}
