//! Browser sessions for the admin UI: log in with the admin token, get a session cookie.
//!
//! Sessions are stateless so that any node behind a load balancer accepts them: the cookie is
//! `<expiry>.<nonce>.<mac>`, the MAC an HMAC-SHA256 keyed with the admin token's digest.
//! Changing the token logs every session out. Each session has a CSRF token (an HMAC of its
//! nonce) that every form carries and every POST must present; the cookie is also
//! `SameSite=Strict` and `HttpOnly`.

use crate::auth::AdminToken;
use crate::WebState;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Form;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::Read;

pub const COOKIE_NAME: &str = "strata_session";
/// A session lasts a working shift.
const SESSION_MILLIS: i64 = 12 * 3600 * 1000;

/// A valid session, taken from the request's cookie.
#[derive(Clone, Debug)]
pub struct Session {
    /// Put into every form; checked on every POST.
    pub csrf: String,
}

fn mac(token: &AdminToken, purpose: &str, text: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(token.digest()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(purpose.as_bytes());
    mac.update(b"|");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn equal_in_constant_time(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new session cookie value.
pub fn new_cookie(token: &AdminToken) -> std::io::Result<String> {
    let mut nonce = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    let expires = archive_core::index::now_millis() + SESSION_MILLIS;
    let body = format!("{expires}.{}", hex::encode(nonce));
    let signature = mac(token, "session", &body);
    Ok(format!("{body}.{signature}"))
}

/// The session a cookie value stands for, if it is genuine and not expired.
pub fn verify_cookie(token: &AdminToken, value: &str) -> Option<Session> {
    let (body, signature) = value.rsplit_once('.')?;
    if !equal_in_constant_time(&mac(token, "session", body), signature) {
        return None;
    }
    let (expires, nonce) = body.split_once('.')?;
    let expires: i64 = expires.parse().ok()?;
    if expires < archive_core::index::now_millis() {
        return None;
    }
    Some(Session {
        csrf: mac(token, "csrf", nonce),
    })
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

pub fn session_of(token: &AdminToken, headers: &HeaderMap) -> Option<Session> {
    cookie_value(headers).and_then(|value| verify_cookie(token, value))
}

/// `secure`: the page came over HTTPS, so the browser must never send the cookie over plain
/// HTTP (where anyone on the path could read and replay it).
pub fn set_cookie_header(value: &str, max_age_seconds: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static(""))
}

pub fn session_cookie_header(value: &str, secure: bool) -> HeaderValue {
    set_cookie_header(value, SESSION_MILLIS / 1000, secure)
}

pub fn clear_cookie_header(secure: bool) -> HeaderValue {
    set_cookie_header("", 0, secure)
}

pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// Pages need a session; without one the browser goes to the login page and comes back.
pub async fn require_session(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    match session_of(&state.token, request.headers()) {
        Some(session) => {
            request.extensions_mut().insert(session);
            crate::audit_http::with_actor(next.run(request).await, "admin-ui")
        }
        None => {
            let wanted = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/ui/".into());
            see_other(&format!("/ui/login?next={}", super::enc(&wanted)))
        }
    }
}

/// A submitted form whose CSRF token matched the session's. Every state-changing UI route
/// takes its fields through this, so none can forget the check.
pub struct CheckedForm {
    pub fields: HashMap<String, String>,
    pub session: Session,
}

impl CheckedForm {
    /// The field, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.fields
            .get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }
    /// `None` when the field is absent or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|v| !v.is_empty())
    }
    pub fn checked(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }
}

impl FromRequest<WebState> for CheckedForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let forbidden = |message: &'static str| (StatusCode::FORBIDDEN, message).into_response();
        let Some(session) = session_of(&state.token, request.headers()) else {
            return Err(see_other("/ui/login"));
        };
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(request, state)
            .await
            .map_err(|rejection| rejection.into_response())?;
        let fields: HashMap<String, String> = pairs.into_iter().collect();
        match fields.get("csrf") {
            Some(presented) if equal_in_constant_time(presented, &session.csrf) => {
                Ok(CheckedForm { fields, session })
            }
            _ => Err(forbidden(
                "The form's security token is missing or stale. Reload the page and try again.",
            )),
        }
    }
}

pub fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_signed_with_the_token_and_carry_a_csrf_token() {
        let token = AdminToken::from_secret("right");
        let cookie = new_cookie(&token).expect("cookie");
        let session = verify_cookie(&token, &cookie).expect("valid");
        assert_eq!(session.csrf.len(), 64);
        assert!(verify_cookie(&AdminToken::from_secret("other"), &cookie).is_none());
        let tampered = cookie.replacen('1', "2", 1);
        assert!(verify_cookie(&token, &tampered).is_none());
        let other = new_cookie(&token).expect("cookie");
        let other_session = verify_cookie(&token, &other).expect("valid");
        assert_ne!(
            session.csrf, other_session.csrf,
            "CSRF tokens differ per session"
        );
    }

    #[test]
    fn expired_cookies_are_refused() {
        let token = AdminToken::from_secret("right");
        let body = format!("{}.00ff", archive_core::index::now_millis() - 1);
        let value = format!("{body}.{}", mac(&token, "session", &body));
        assert!(verify_cookie(&token, &value).is_none());
    }
}
