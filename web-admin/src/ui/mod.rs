//! The admin UI: server-rendered pages (maud) with plain forms, and a few lines of script
//! that refresh the live parts (job progress). Everything lives under `/ui`; each page asks
//! the same functions the REST API uses, so both validate alike.

mod audit;
mod dashboard;
mod peers;
mod rules;
pub mod session;
mod storage;
mod studies;
mod widgets;

use crate::api::ApiError;
use crate::WebState;
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
pub use session::Session;

pub fn routes(state: WebState) -> Router<WebState> {
    let pages = Router::new()
        .route("/ui/", get(dashboard::page))
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::to("/ui/") }),
        )
        .route("/ui/studies", get(studies::search))
        .route("/ui/studies/{uid}", get(studies::detail))
        .route("/ui/studies/{uid}/{action}", post(studies::action))
        .route("/ui/jobs", get(studies::jobs))
        .route("/ui/jobs/{id}/{action}", post(studies::job_action))
        .route(
            "/ui/filesystems",
            get(storage::filesystems).post(storage::add_filesystem),
        )
        .route("/ui/filesystems/{id}", post(storage::change_filesystem))
        .route(
            "/ui/targets",
            get(storage::targets).post(storage::save_target),
        )
        .route("/ui/targets/{name}/remove", post(storage::remove_target))
        .route("/ui/rules", get(rules::list).post(rules::save_copy_rule))
        .route(
            "/ui/rules/copy/{name}/remove",
            post(rules::remove_copy_rule),
        )
        .route("/ui/rules/retention", post(rules::save_retention_rule))
        .route("/ui/rules/retention/{name}", get(rules::retention_rule))
        .route(
            "/ui/rules/retention/{name}/remove",
            post(rules::remove_retention_rule),
        )
        .route("/ui/ae-titles", get(peers::list).post(peers::save))
        .route("/ui/ae-titles/{ae}/remove", post(peers::remove))
        .route("/ui/audit", get(audit::page))
        .route("/ui/logout", post(logout))
        .route_layer(from_fn_with_state(state, session::require_session));
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/static/style.css", get(style))
        .route("/ui/static/app.js", get(script))
        .merge(pages)
}

async fn style() -> Response {
    (
        [(CONTENT_TYPE, "text/css")],
        include_str!("static/style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript")],
        include_str!("static/app.js"),
    )
        .into_response()
}

/// What a page says after an action: `?ok=…` or `?error=…` on the redirect.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    pub ok: Option<String>,
    pub error: Option<String>,
}

/// The page frame: navigation, the notice, the content.
pub fn layout(
    title: &str,
    current: &str,
    session: Option<&Session>,
    notice: &Notice,
    content: Markup,
) -> Markup {
    const NAV: [(&str, &str); 8] = [
        ("/ui/", "Dashboard"),
        ("/ui/studies", "Studies"),
        ("/ui/jobs", "Jobs"),
        ("/ui/filesystems", "Filesystems"),
        ("/ui/targets", "Nearline targets"),
        ("/ui/rules", "Rules"),
        ("/ui/ae-titles", "AE titles"),
        ("/ui/audit", "Audit trail"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Strata" }
                link rel="stylesheet" href="/ui/static/style.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "Strata" }
                    @if let Some(session) = session {
                        nav {
                            @for (href, label) in NAV {
                                a href=(href) class=[(current == href).then_some("current")] { (label) }
                            }
                        }
                        form.logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(ok) = &notice.ok { p.notice.ok role="status" { (ok) } }
                    @if let Some(error) = &notice.error { p.notice.error role="alert" { (error) } }
                    (content)
                }
            }
        }
    }
}

/// A complete HTML response.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A 200 page in the signed-in layout: what every page handler answers with.
pub fn signed_in_page(
    title: &str,
    current: &str,
    session: &Session,
    notice: &Notice,
    content: Markup,
) -> Response {
    page(
        StatusCode::OK,
        layout(title, current, Some(session), notice, content),
    )
}

/// Back to `path` with a message: the pattern after every form (reloading never resubmits).
pub fn redirect_with(path: &str, outcome: Result<String, ApiError>) -> Response {
    let (key, message) = match outcome {
        Ok(message) => ("ok", message),
        Err(error) => ("error", error.message().to_string()),
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    session::see_other(&format!("{path}{separator}{key}={}", enc(&message)))
}

/// A page that could not be built (the index is down, a study is unknown): the frame with
/// the error, and the API's status.
pub fn error_page(session: &Session, title: &str, error: ApiError) -> Response {
    let notice = Notice {
        ok: None,
        error: Some(error.message().to_string()),
    };
    page(
        error.status(),
        layout(title, "", Some(session), &notice, html! {}),
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// Only paths inside the UI: `next` must not send the browser elsewhere after login.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with("/ui/") && !path.starts_with("//") && !path.contains("\\") =>
        {
            path.to_string()
        }
        _ => "/ui/".into(),
    }
}

fn login_form(next: &str, error: Option<&str>) -> Markup {
    let notice = Notice {
        ok: None,
        error: error.map(str::to_string),
    };
    layout(
        "Log in",
        "",
        None,
        &notice,
        html! {
            form.card.narrow method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p.hint { "The API token Strata printed at its first start (kept in the admin-token file of its data directory, or http.admin_token_file)." }
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    page(
        StatusCode::OK,
        login_form(&safe_next(query.next.as_deref()), query.error.as_deref()),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    State(state): State<WebState>,
    extensions: axum::http::Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let matched = state.token.matches(&form.token);
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_default();
    let event = NewAuditEvent::new(AuditAction::Login, AuditOutcome::of(matched), "admin-ui")
        .peer(peer)
        .detail(if matched {
            "admin UI login"
        } else {
            "admin UI login refused: wrong token"
        });
    if matched {
        state.auditor.record(event).await;
    } else {
        // Guessing is cheap for a client: never let it slow the server down.
        state.auditor.record_unless_busy(event);
    }
    if !matched {
        // Slows down guessing; says nothing about why.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        tracing::warn!("admin UI: failed login");
        return page(
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some("Wrong token.")),
        );
    }
    match session::new_cookie(&state.token) {
        Ok(cookie) => session::with_cookie(
            session::see_other(&next),
            session::session_cookie_header(&cookie, over_tls(&extensions)),
        ),
        Err(error) => {
            tracing::error!(%error, "admin UI: cannot create a session");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                login_form(&next, Some("Cannot create a session; see the server log.")),
            )
        }
    }
}

async fn logout(extensions: axum::http::Extensions, _form: session::CheckedForm) -> Response {
    session::with_cookie(
        session::see_other("/ui/login"),
        session::clear_cookie_header(over_tls(&extensions)),
    )
}

/// Whether the request came over HTTPS (the listener marks it).
fn over_tls(extensions: &axum::http::Extensions) -> bool {
    extensions.get::<crate::server::OverTls>().is_some()
}

/// Percent-encodes text for a URL's path segment or query value.
pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
