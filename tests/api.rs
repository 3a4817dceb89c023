//! The REST API end to end, on SQLite and PostgreSQL: credentials, study search and detail
//! with availability and copies, actions that queue jobs, jobs, and the errors for bad input.

#[macro_use]
mod common;

use common::lifecycle::*;
use common::{Backend, Strata};
use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;

/// One HTTP/1.0 request; returns the status and the JSON body (Null if not JSON).
fn http(
    strata: &Strata,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", strata.http_port)).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn wait_for_job(strata: &Strata, token: &str, id: i64) -> Value {
    let mut job = Value::Null;
    wait_for("the job to end", Duration::from_secs(60), strata, || {
        let (_, body) = http(strata, "GET", &format!("/api/jobs/{id}"), Some(token), None);
        job = body["job"].clone();
        let state = job["state"].as_str().unwrap_or("").to_string();
        async move { matches!(state.as_str(), "DONE" | "FAILED" | "CANCELLED") }
    })
    .await;
    job
}

async fn the_api_serves_admins_and_refuses_everyone_else(backend: Backend) {
    let strata = Strata::start(backend, &lifecycle_toml("", "")).await;
    let study = ingest(&strata, 1, 3, 64).await.remove(0);
    let token = strata.api_token();
    let api = |method: &str, path: &str, body: Option<&str>| {
        http(&strata, method, path, Some(&token), body)
    };

    // Credentials: /healthz is open, everything else needs the token; 401s say nothing more.
    assert_eq!(http(&strata, "GET", "/healthz", None, None).0, 200);
    for path in ["/api/studies", "/api/jobs", "/metrics"] {
        let (status, body) = http(&strata, "GET", path, None, None);
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["code"], "unauthorized");
        assert_eq!(http(&strata, "GET", path, Some("wrong-token"), None).0, 401);
    }
    assert!(
        !strata.log().contains(&token),
        "the token never reaches the log"
    );

    // Search and detail.
    let (status, found) = api("GET", "/api/studies?limit=10", None);
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["studies"][0]["study_uid"], study.as_str());
    assert_eq!(found["studies"][0]["availability"], "ONLINE");
    let patient = found["studies"][0]["patient_id"]
        .as_str()
        .expect("patient id")
        .to_string();
    assert_eq!(
        api("GET", &format!("/api/studies?patient_id={patient}"), None).1["studies"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        api("GET", "/api/studies?patient_id=NOBODY", None).1["studies"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(
        api("GET", "/api/studies?modality=CT&availability=ONLINE", None).1["studies"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (status, error) = api("GET", "/api/studies?date_from=yesterday", None);
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("date_from"),
        "{error}"
    );
    assert_eq!(api("GET", "/api/studies?colour=red", None).0, 400);
    assert_eq!(api("GET", "/api/studies?limit=0", None).0, 400);

    let (status, detail) = api("GET", &format!("/api/studies/{study}"), None);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["series"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["copies"]["online"][0]["instances"], 6);
    assert_eq!(
        detail["copies"]["nearline"].as_array().map(Vec::len),
        Some(0)
    );
    let (status, missing) = api("GET", "/api/studies/1.2.3.999", None);
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));
    assert_eq!(
        api("GET", "/api/studies/1.2.3.999/availability", None).0,
        404
    );

    // Actions queue jobs; the job is returned and runs.
    let (status, queued) = api("POST", &format!("/api/studies/{study}/copy"), None);
    assert_eq!(status, 202, "{queued}");
    let copy = wait_for_job(&strata, &token, queued["job"]["id"].as_i64().expect("id")).await;
    assert_eq!(copy["state"], "DONE", "{copy}");
    let (_, available) = api("GET", &format!("/api/studies/{study}/availability"), None);
    assert_eq!(available["availability"], "ONLINE");
    assert_eq!(
        available["nearline"][0]["status"], "TO_ARCHIVE",
        "{available}"
    );
    assert_eq!(available["nearline"][0]["target"], "local");
    let (_, verify) = api(
        "POST",
        &format!("/api/studies/{study}/verify"),
        Some(r#"{"target":"local"}"#),
    );
    wait_for_job(&strata, &token, verify["job"]["id"].as_i64().expect("id")).await;
    let (_, available) = api("GET", &format!("/api/studies/{study}/availability"), None);
    assert_eq!(
        available["nearline"][0]["status"], "ARCHIVED",
        "{available}"
    );

    assert_eq!(
        api(
            "POST",
            &format!("/api/studies/{study}/copy"),
            Some(r#"{"target":"tape"}"#)
        )
        .0,
        400
    );
    assert_eq!(
        api("POST", &format!("/api/studies/{study}/shred"), None).0,
        404
    );
    assert_eq!(api("POST", "/api/studies/1.2.3.999/copy", None).0, 404);

    // Jobs: list, detail, cancel and retry rules.
    let (_, jobs) = api("GET", &format!("/api/jobs?study={study}"), None);
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(2));
    assert_eq!(api("GET", "/api/jobs?state=BROKEN", None).0, 400);
    let done = copy["id"].as_i64().expect("id");
    assert_eq!(
        api("POST", &format!("/api/jobs/{done}/cancel"), None).0,
        409
    );
    assert_eq!(api("POST", &format!("/api/jobs/{done}/retry"), None).0, 409);
    assert_eq!(api("GET", "/api/jobs/abc", None).0, 400);
    assert_eq!(api("GET", "/api/jobs/999999", None).0, 404);
    assert_eq!(api("GET", "/api/nothing", None).0, 404);
}

on_both_backends!(the_api_serves_admins_and_refuses_everyone_else);
