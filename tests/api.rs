//! The REST API end to end, on SQLite and PostgreSQL: credentials, study search and detail
//! with availability and copies, actions that queue jobs, jobs, and the errors for bad input.

#[macro_use]
mod common;

use common::lifecycle::*;
use common::{http_json as http, Backend, Strata};
use serde_json::Value;
use std::time::Duration;

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

    // Capacity and totals.
    let (status, stats) = api("GET", "/api/stats", None);
    assert_eq!(status, 200, "{stats}");
    assert!(
        stats["filesystems"][0]["total_bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert_eq!(stats["availability"][0]["availability"], "ONLINE");
    assert_eq!(stats["availability"][0]["studies"], 1);
    assert_eq!(stats["jobs"]["DONE"], 2, "{stats}");

    // DICOM peers.
    let peer = r#"{"host":"10.0.0.7","port":104,"can_query":false}"#;
    assert_eq!(api("PUT", "/api/ae-titles/PACS1", Some(peer)).0, 200);
    let (_, peers) = api("GET", "/api/ae-titles", None);
    assert_eq!(peers["ae_titles"][0]["ae_title"], "PACS1");
    assert_eq!(peers["ae_titles"][0]["can_query"], false);
    let (status, error) = api("PUT", "/api/ae-titles/WAY_TOO_LONG_AE_TITLE", Some(peer));
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("ae_title"),
        "{error}"
    );
    assert_eq!(
        api(
            "PUT",
            "/api/ae-titles/PACS2",
            Some(r#"{"host":"h","port":0}"#)
        )
        .0,
        400
    );
    assert_eq!(api("PUT", "/api/ae-titles/PACS2", Some("not json")).0, 400);
    assert_eq!(api("DELETE", "/api/ae-titles/PACS1", None).0, 204);
    assert_eq!(api("DELETE", "/api/ae-titles/PACS1", None).0, 404);

    // NEARLINE targets: validated like the config file; no field for a secret exists.
    let archive = strata.dir.path().join("archive2");
    let body = format!(r#"{{"kind":"filesystem","path":"{}"}}"#, archive.display());
    assert_eq!(api("PUT", "/api/targets/archive2", Some(&body)).0, 200);
    let (status, error) = api("PUT", "/api/targets/cloud", Some(r#"{"kind":"s3"}"#));
    assert_eq!(status, 400);
    assert!(
        error["message"].as_str().unwrap_or("").contains("bucket"),
        "{error}"
    );
    let (status, _) = api(
        "PUT",
        "/api/targets/cloud",
        Some(r#"{"kind":"s3","bucket":"b","secret_access_key":"hunter2"}"#),
    );
    assert_eq!(
        status, 400,
        "plain secrets are refused; credentials come from files or the AWS environment"
    );
    let (_, targets) = api("GET", "/api/targets", None);
    assert_eq!(targets["targets"].as_array().map(Vec::len), Some(2));
    assert!(!targets.to_string().contains("hunter2"));

    // Rules: a bad cron expression is a 400 naming the field.
    let (status, error) = api(
        "PUT",
        "/api/copy-rules/nightly",
        Some(r#"{"target":"local","schedule":"every night"}"#),
    );
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("schedule"),
        "{error}"
    );
    assert_eq!(
        api(
            "PUT",
            "/api/copy-rules/nightly",
            Some(r#"{"target":"tape","schedule":"0 0 1 * * *"}"#)
        )
        .0,
        400
    );
    assert_eq!(
        api(
            "PUT",
            "/api/copy-rules/nightly",
            Some(r#"{"target":"local","schedule":"0 0 1 * * *"}"#)
        )
        .0,
        200
    );
    assert_eq!(
        api("GET", "/api/copy-rules", None).1["copy_rules"][0]["rule"]["name"],
        "nightly"
    );
    let (status, error) = api(
        "PUT",
        "/api/retention-rules/idle",
        Some(r#"{"schedule":"0 0 * * * *"}"#),
    );
    assert_eq!(status, 400, "a rule that selects nothing: {error}");
    let rule = r#"{"schedule":"0 0 * * * *","not_accessed_days":0,"enabled":false}"#;
    assert_eq!(api("PUT", "/api/retention-rules/idle", Some(rule)).0, 200);
    let (status, preview) = api("POST", "/api/retention-rules/idle/preview", None);
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["studies"][0]["study_uid"], study.as_str());
    assert_eq!(
        preview["studies"][0]["delete"], true,
        "ARCHIVED and idle: {preview}"
    );
    assert_eq!(
        api("POST", "/api/retention-rules/none/preview", None).0,
        404
    );

    // Removing: only what was added at run time and is not in use.
    assert_eq!(
        api("DELETE", "/api/targets/local", None).0,
        409,
        "from the config (default)"
    );
    // Changing it would not survive a restart (the config is applied again): refused too.
    let (status, error) = api("PUT", "/api/targets/local", Some(&body));
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("defined_in_config"))
    );
    assert_eq!(
        api("DELETE", "/api/targets/local", None).0,
        409,
        "still a config target after the refused change"
    );
    assert_eq!(api("DELETE", "/api/targets/archive2", None).0, 204);
    assert_eq!(api("DELETE", "/api/targets/archive2", None).0, 404);
    let (status, error) = api("PUT", "/api/targets/spare", Some(&body));
    assert_eq!(status, 200, "{error}");
    assert_eq!(
        api(
            "PUT",
            "/api/copy-rules/to-spare",
            Some(r#"{"target":"spare","schedule":"0 0 1 * * *"}"#)
        )
        .0,
        200
    );
    let (status, error) = api("DELETE", "/api/targets/spare", None);
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("in_use")),
        "{error}"
    );
    assert_eq!(api("DELETE", "/api/copy-rules/to-spare", None).0, 204);
    assert_eq!(api("DELETE", "/api/targets/spare", None).0, 204);
    assert_eq!(api("DELETE", "/api/retention-rules/idle", None).0, 204);
    assert_eq!(api("DELETE", "/api/retention-rules/idle", None).0, 404);
}

/// Filesystems added through the API take objects at once (no restart); config filesystems
/// cannot be changed there; a filesystem holding files cannot be removed.
async fn filesystems_are_managed_at_run_time(backend: Backend) {
    // The only configured filesystem is "full": its watermark is above any disk.
    let full = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[[online.filesystems]]\npath = \"{}\"\nmin_free = \"1000TB\"\n",
        full.path().display()
    );
    let strata = Strata::start(backend, &toml).await;
    let token = strata.api_token();
    let api = |method: &str, path: &str, body: Option<&str>| {
        http(&strata, method, path, Some(&token), body)
    };
    assert_eq!(http(&strata, "GET", "/api/filesystems", None, None).0, 401);
    let (status, listing) = api("GET", "/api/filesystems", None);
    assert_eq!(status, 200);
    let config_fs = &listing["filesystems"][0];
    assert_eq!(config_fs["from_config"], true);
    assert_eq!(listing["groups"][0]["name"], "ONLINE_STORAGE");
    let config_id = config_fs["id"].as_i64().expect("id");

    let corpus = corpus_of(&strata, 1, 2, 32);
    strata.cli_ok(&[
        "generate",
        "--out",
        &corpus.display().to_string(),
        "--patients",
        "1",
        "--instances-per-series",
        "2",
        "--matrix",
        "32",
    ]);
    let sent_count = common::files_below(&corpus).len();
    assert!(sent_count >= 2);
    let refused = common::dcmtk::storescu_dir(strata.dicom_port, &corpus, &[]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("A700")
            || String::from_utf8_lossy(&refused.stdout).contains("A700")
            || !refused.status.success(),
        "the full filesystem refuses objects"
    );

    // Bad input: each error names its field.
    for (body, field) in [
        (r#"{"path":"relative/dir"}"#, "path"),
        (r#"{"group":"ONLINE_STORAGE"}"#, "path"),
        (r#"{"path":"/tmp/x","mode":"rx"}"#, "mode"),
        (r#"{"path":"/tmp/x","group":"no spaces"}"#, "group"),
        (r#"{"path":"/tmp/x","min_free":"lots"}"#, "body"),
        (r#"{"path":"/tmp/x","colour":"red"}"#, "body"),
    ] {
        let (status, error) = api("POST", "/api/filesystems", Some(body));
        assert_eq!(status, 400, "{body}");
        assert!(
            error["message"].as_str().unwrap_or("").starts_with(field),
            "{body}: {error}"
        );
    }
    assert_eq!(
        api(
            "PUT",
            &format!("/api/filesystems/{config_id}"),
            Some(r#"{"mode":"ro"}"#)
        )
        .0,
        409
    );
    assert_eq!(
        api("DELETE", &format!("/api/filesystems/{config_id}"), None).0,
        409
    );
    assert_eq!(api("GET", "/api/filesystems/999999", None).0, 404);
    assert_eq!(api("GET", "/api/filesystems/abc", None).0, 400);

    // Add one: the next objects land there, without a restart.
    let added = strata.data_dir().join("added");
    let body = format!(r#"{{"path":"{}","min_free":"1MiB"}}"#, added.display());
    let (status, created) = api("POST", "/api/filesystems", Some(&body));
    assert_eq!(status, 201, "{created}");
    let id = created["filesystem"]["id"].as_i64().expect("id");
    assert!(added.join(".incoming").is_dir());
    assert_eq!(
        api("POST", "/api/filesystems", Some(&body)).0,
        409,
        "path taken"
    );
    let sent = common::dcmtk::storescu_dir(strata.dicom_port, &corpus, &[]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let stored = common::files_below(&added);
    assert_eq!(
        stored
            .iter()
            .filter(|p| !p.to_string_lossy().contains(".incoming"))
            .count(),
        sent_count,
        "{stored:?}"
    );
    let (_, detail) = api("GET", &format!("/api/filesystems/{id}"), None);
    assert_eq!(detail["filesystem"]["files"], sent_count as i64);
    assert_eq!(detail["filesystem"]["receives_new_objects"], true);

    // Change it; its path cannot change; it holds files, so it stays.
    let (status, changed) = api(
        "PUT",
        &format!("/api/filesystems/{id}"),
        Some(r#"{"mode":"ro","min_free":"2GiB"}"#),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["filesystem"]["mode"], "ro");
    assert_eq!(changed["filesystem"]["min_free_bytes"], 2u64 << 30);
    let (status, error) = api(
        "PUT",
        &format!("/api/filesystems/{id}"),
        Some(r#"{"path":"/elsewhere"}"#),
    );
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap_or("").starts_with("path"));
    let (status, error) = api("DELETE", &format!("/api/filesystems/{id}"), None);
    assert_eq!(status, 409);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{sent_count} file(s)")),
        "{error}"
    );
    // An empty one can go.
    let spare = strata.data_dir().join("spare");
    let (status, created) = api(
        "POST",
        "/api/filesystems",
        Some(&format!(
            r#"{{"path":"{}","mode":"rw","group":"SPARE"}}"#,
            spare.display()
        )),
    );
    assert_eq!(status, 201);
    let spare_id = created["filesystem"]["id"].as_i64().expect("id");
    let (_, listing) = api("GET", "/api/filesystems", None);
    assert_eq!(listing["groups"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        api("DELETE", &format!("/api/filesystems/{spare_id}"), None).0,
        204
    );
    assert_eq!(
        api("DELETE", &format!("/api/filesystems/{spare_id}"), None).0,
        404
    );
}

on_both_backends!(
    the_api_serves_admins_and_refuses_everyone_else,
    filesystems_are_managed_at_run_time
);

/// The OpenAPI document validates, and schemathesis (property-based requests generated from
/// it, with the token) finds no 5xx anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_validates_and_fuzzing_finds_no_server_error() {
    let strata = Strata::start(Backend::Sqlite, &lifecycle_toml("", "")).await;
    ingest(&strata, 1, 2, 32).await;
    let token = strata.api_token();
    let (status, schema) = http(&strata, "GET", "/api/openapi.json", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(schema["openapi"], "3.0.3");
    let path = strata.dir.path().join("openapi.json");
    std::fs::write(&path, schema.to_string()).expect("write schema");
    let path = path.display().to_string();
    common::dcmtk::python(
        &["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1])))", &path],
        None,
    );
    let output = std::process::Command::new("python3")
        .args([
            "-m",
            "schemathesis.cli",
            "run",
            &path,
            "--url",
            &format!("http://127.0.0.1:{}/api", strata.http_port),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-c",
            "not_a_server_error",
            "-n",
            "20",
            "--seed",
            "1",
            // Adding or changing a filesystem creates its directory; fuzzed paths would litter
            // this machine. Those two are tested with chosen input instead.
            "--exclude-operation-id",
            "addFilesystem",
            "--exclude-operation-id",
            "updateFilesystem",
        ])
        // Its cache directory (.schemathesis/) goes to the test's own directory.
        .current_dir(strata.dir.path())
        .output()
        .expect("run schemathesis (scripts/test.sh installs it: pip install schemathesis)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    assert!(text.contains("passed"), "{text}");

    // DICOMweb has its own document (its paths would clash with the API's /studies).
    let (status, dicomweb) = http(
        &strata,
        "GET",
        "/dicom-web/openapi.json",
        Some(&token),
        None,
    );
    assert_eq!(status, 200);
    let dicomweb_path = strata.dir.path().join("openapi-dicomweb.json");
    std::fs::write(&dicomweb_path, dicomweb.to_string()).expect("write schema");
    let dicomweb_path = dicomweb_path.display().to_string();
    common::dcmtk::python(
        &["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1])))", &dicomweb_path],
        None,
    );
    let output = std::process::Command::new("python3")
        .args([
            "-m",
            "schemathesis.cli",
            "run",
            &dicomweb_path,
            "--url",
            &format!("http://127.0.0.1:{}/dicom-web", strata.http_port),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-c",
            "not_a_server_error",
            "-n",
            "10",
            "--seed",
            "1",
            // schemathesis cannot generate multipart/related bodies; STOW-RS is tested with
            // chosen parts (tests/dicomweb.rs).
            "--exclude-operation-id",
            "storeInstances",
            "--exclude-operation-id",
            "storeInstancesOfStudy",
        ])
        .current_dir(strata.dir.path())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems in DICOMweb:\n{text}"
    );
    assert!(
        !strata.log().contains(&token),
        "the token never reaches the log"
    );
}

/// The server runs with the glibc malloc settings of src/malloc_tuning.rs (it re-executes
/// itself once to get them), and a value already in the environment is kept.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_with_its_malloc_settings() {
    let strata = Strata::start(Backend::Sqlite, "").await;
    let pid = strata.pid().expect("running");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let variables: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let value_of = |name: &str| {
        variables
            .iter()
            .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let settings = [
        ("MALLOC_ARENA_MAX", cores.to_string()),
        ("MALLOC_MMAP_THRESHOLD_", "8388608".to_string()),
        ("MALLOC_TRIM_THRESHOLD_", "16777216".to_string()),
    ];
    // It re-executed itself exactly when something was missing, and marked that it did.
    let reexecuted = settings
        .iter()
        .any(|(name, _)| std::env::var_os(name).is_none());
    assert_eq!(
        value_of("MALLOC_TUNED_BY_STRATA").as_deref(),
        reexecuted.then_some("1")
    );
    for (name, default) in settings {
        let expected = std::env::var(name).unwrap_or(default);
        assert_eq!(value_of(name).as_deref(), Some(expected.as_str()), "{name}");
    }
}
