//! The audit trail end to end, on SQLite and PostgreSQL: a C-STORE association, a C-MOVE, a
//! refused association, a failed UI login, a DICOMweb read, an API action and a deletion are
//! each an event in `/api/audit` (with who, from where, which study and patient), and the
//! same events reach an ATNA syslog receiver as DICOM audit messages.

#[macro_use]
mod common;

use common::lifecycle::*;
use common::{dcmtk, http_json, http_text, Backend, Strata};
use serde_json::Value;
use std::net::UdpSocket;
use std::time::Duration;

on_both_backends!(every_kind_of_event_is_in_the_audit_trail);

/// The events `/api/audit?{query}` lists.
fn audit(strata: &Strata, query: &str) -> Vec<Value> {
    let (status, body) = http_json(
        strata,
        "GET",
        &format!("/api/audit?{query}"),
        Some(&strata.api_token()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until `/api/audit?{query}` lists at least one event (they are written in batches).
async fn wait_for_events(strata: &Strata, what: &str, query: &str) -> Vec<Value> {
    let mut events = Vec::new();
    wait_for(what, Duration::from_secs(20), strata, || {
        events = audit(strata, query);
        let found = !events.is_empty();
        async move { found }
    })
    .await;
    events
}

async fn job_done(strata: &Strata, response: Value) {
    let id = response["job"]["id"].as_i64().expect("job id");
    let token = strata.api_token();
    wait_for("the job to finish", Duration::from_secs(60), strata, || {
        let (_, body) = http_json(
            strata,
            "GET",
            &format!("/api/jobs/{id}"),
            Some(&token),
            None,
        );
        let done = body["job"]["state"] == "DONE";
        async move { done }
    })
    .await;
}

async fn every_kind_of_event_is_in_the_audit_trail(backend: Backend) {
    let syslog = UdpSocket::bind("127.0.0.1:0").expect("udp");
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let syslog_port = syslog.local_addr().expect("addr").port();
    let config = format!(
        "{}[audit]\nsyslog = \"udp://127.0.0.1:{syslog_port}\"\n",
        lifecycle_toml("", "")
    );
    let strata = Strata::start(backend, &config).await;
    let token = strata.api_token();
    let study = ingest(&strata, 1, 3, 32).await.remove(0);

    // The C-STORE association: accepted, and one STORE event for its study with counts.
    let stored = wait_for_events(
        &strata,
        "the STORE event",
        &format!("action=STORE&study={study}"),
    )
    .await;
    assert_eq!(stored.len(), 1, "one event per association and study");
    let event = &stored[0];
    assert_eq!(event["outcome"], "SUCCESS");
    assert_eq!(event["actor"], "STORESCU", "storescu's calling AE title");
    assert_eq!(event["peer"], "127.0.0.1");
    assert_eq!(event["detail"], "C-STORE: 6 stored, 0 refused");
    let patient = event["patient_id"]
        .as_str()
        .expect("patient id")
        .to_string();
    assert!(!patient.is_empty(), "{event}");
    let associations = audit(&strata, "action=ASSOCIATION&outcome=SUCCESS");
    assert!(!associations.is_empty());
    assert!(
        !strata.log().contains(&patient),
        "patient IDs go to the audit trail, never to the log"
    );

    // A C-MOVE to a registered destination.
    let work = tempfile::tempdir().expect("tempdir");
    let destination = dcmtk::Storescp::start(&work.path().join("moved"), "AUDITDEST", true);
    strata.cli_ok(&[
        "ae",
        "add",
        "AUDITDEST",
        "127.0.0.1",
        &destination.port.to_string(),
    ]);
    dcmtk::run_ok(
        "movescu",
        &[
            "-S",
            "-aet",
            "MOVER",
            "-aec",
            "STRATA",
            "-aem",
            "AUDITDEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "127.0.0.1",
            &strata.dicom_port.to_string(),
        ],
    );
    assert_eq!(destination.received(6).len(), 6);
    let moved = wait_for_events(&strata, "the C-MOVE event", "action=RETRIEVE&actor=MOVER").await;
    assert_eq!(moved[0]["study_uid"], study.as_str());
    assert_eq!(moved[0]["outcome"], "SUCCESS");
    assert_eq!(moved[0]["detail"], "C-MOVE to AUDITDEST: status 0x0000");

    // A refused association (a called AE title that is not ours).
    assert!(dcmtk::echo(strata.dicom_port, "NOT-STRATA").is_err());
    let refused = wait_for_events(
        &strata,
        "the refused association",
        "action=ASSOCIATION&outcome=FAILURE",
    )
    .await;
    assert!(
        refused[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("NOT-STRATA"),
        "{}",
        refused[0]
    );

    // A failed login to the admin UI.
    let (status, _) = http_text(
        &strata,
        "POST",
        "/ui/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "token=guess&next=%2Fui%2F",
    );
    assert_eq!(status, 401);
    let logins = wait_for_events(&strata, "the failed login", "action=LOGIN").await;
    assert_eq!(logins[0]["outcome"], "FAILURE");
    assert_eq!(logins[0]["peer"], "127.0.0.1");

    // A DICOMweb read with the admin token, and one without credentials.
    let metadata = format!("/dicom-web/studies/{study}/metadata");
    assert_eq!(
        http_json(&strata, "GET", &metadata, Some(&token), None).0,
        200
    );
    assert_eq!(http_json(&strata, "GET", &metadata, None, None).0, 401);
    let reads = wait_for_events(
        &strata,
        "the DICOMweb reads",
        &format!("action=DICOMWEB&study={study}&outcome=FAILURE"),
    )
    .await;
    assert_eq!(reads[0]["actor"], "anonymous");
    let reads = audit(
        &strata,
        &format!("action=DICOMWEB&study={study}&actor=admin"),
    );
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["detail"], format!("GET {metadata}: 200"));

    // Copy, verify and delete through the API: API events, then the deletion itself.
    for action in ["copy", "verify"] {
        let (status, job) = http_json(
            &strata,
            "POST",
            &format!("/api/studies/{study}/{action}"),
            Some(&token),
            Some(r#"{"target":"local"}"#),
        );
        assert_eq!(status, 202, "{job}");
        job_done(&strata, job).await;
    }
    let (status, job) = http_json(
        &strata,
        "POST",
        &format!("/api/studies/{study}/delete-online"),
        Some(&token),
        None,
    );
    assert_eq!(status, 202, "{job}");
    job_done(&strata, job).await;
    let deleted = wait_for_events(
        &strata,
        "the DELETE event",
        &format!("action=DELETE&study={study}"),
    )
    .await;
    assert_eq!(deleted[0]["outcome"], "SUCCESS");
    assert_eq!(deleted[0]["actor"], "api");
    let requests = audit(&strata, &format!("action=API&study={study}"));
    assert_eq!(requests.len(), 3, "copy, verify, delete: {requests:?}");
    assert!(requests.iter().all(|e| e["actor"] == "admin"));

    // Filters are checked; paging goes backwards by id.
    assert_eq!(
        http_json(
            &strata,
            "GET",
            "/api/audit?action=SHRED",
            Some(&token),
            None
        )
        .0,
        400
    );
    assert_eq!(
        http_json(
            &strata,
            "GET",
            "/api/audit?since=yesterday",
            Some(&token),
            None
        )
        .0,
        400
    );
    assert_eq!(http_json(&strata, "GET", "/api/audit", None, None).0, 401);
    let newest = audit(&strata, "limit=2");
    assert_eq!(newest.len(), 2);
    let older = audit(
        &strata,
        &format!("limit=2&before={}", newest[1]["id"].as_i64().expect("id")),
    );
    assert!(older[0]["id"].as_i64() < newest[1]["id"].as_i64());

    // The ATNA receiver got DICOM audit messages: the store among them.
    let mut messages = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while let Ok(length) = syslog.recv(&mut buffer) {
        messages.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
    }
    let store = messages
        .iter()
        .find(|m| m.contains("csd-code=\"110104\"") && m.contains("EventActionCode=\"C\""))
        .unwrap_or_else(|| panic!("no store message among {} received", messages.len()));
    assert!(store.starts_with("<85>1 "), "{store}");
    assert!(
        store.contains(&study) && store.contains(&patient),
        "{store}"
    );
    assert!(messages.iter().any(|m| m.contains("csd-code=\"110105\"")));
}
