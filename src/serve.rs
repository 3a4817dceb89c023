//! `strata serve` and `strata migrate`: open the index, prepare storage, start the services.

use anyhow::Context;
use archive_core::accept::Acceptor;
use archive_core::audit::{AuditSink, Auditor};
use archive_core::audit_syslog::UdpSyslog;
use archive_core::config::{redact_url, Config};
use archive_core::index::Index;
use archive_core::ingest::IngestQueue;
use archive_core::nearline::TargetCache;
use archive_core::online::OnlineStore;
use archive_core::retrieve::{NearlineAccess, Retriever};
use archive_core::retrieve_cache::RetrieveCache;
use archive_core::tls;
use dicom_scp::ScpContext;
use std::sync::Arc;

pub fn serve(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(run(config))
}

pub fn migrate(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        drop(index);
        println!("index schema is up to date");
        Ok(())
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub async fn open_index(config: &Config) -> anyhow::Result<Index> {
    let url = config.effective_database_url();
    let index = Index::open(&url)
        .await
        .with_context(|| format!("cannot open the index at {}", redact_url(&url)))?;
    index
        .migrate()
        .await
        .context("cannot migrate the index schema")?;
    index.set_min_archived_copies(config.lifecycle.min_archived_copies);
    Ok(index)
}

/// Records the configured NEARLINE targets and copy rules in the index (run-time additions
/// stay), so every node and every command sees the same ones.
pub async fn prepare_nearline(index: &Index, config: &Config) -> anyhow::Result<()> {
    let now = archive_core::index::now_millis();
    index
        .sync_targets(&config.effective_targets(), now)
        .await
        .context("cannot record the NEARLINE targets in the index")?;
    index
        .sync_copy_rules(&config.lifecycle.copy_rules, now)
        .await
        .context("cannot record the copy rules in the index")?;
    index
        .sync_retention_rules(&config.lifecycle.retention_rules, now)
        .await
        .context("cannot record the retention rules in the index")?;
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let index = open_index(&config).await?;
    prepare_nearline(&index, &config).await?;
    let filesystems = index
        .sync_filesystems(&config.effective_filesystems())
        .await
        .context("cannot record the ONLINE filesystems in the index")?;
    let online = OnlineStore::new(&config.online.store_group, filesystems);
    let stale = online
        .prepare()
        .context("cannot prepare the ONLINE filesystems")?;
    if stale > 0 {
        tracing::info!(
            files = stale,
            "removed unacknowledged temporary files left by an earlier run"
        );
    }
    let ingest = IngestQueue::start(index.clone());
    let targets = Arc::new(TargetCache::new(Arc::new(hsm_s3::Targets)));
    let cache_dir = config.effective_cache_dir();
    let cache = RetrieveCache::open(cache_dir.clone(), config.nearline.cache_size.0).with_context(
        || {
            format!(
                "cannot prepare the retrieve cache {} (key nearline.cache_dir)",
                cache_dir.display()
            )
        },
    )?;
    let retriever = Retriever::with_nearline(NearlineAccess {
        index: index.clone(),
        targets: targets.clone(),
        cache,
    });
    let acceptor = Acceptor::new(
        online.clone(),
        index.clone(),
        ingest,
        config.dicom.duplicate_policy,
    );
    let auditor = start_auditor(&config, &index)?;
    let mut scp = ScpContext::new(&config, index.clone(), acceptor.clone(), auditor.clone());
    scp.retriever = retriever.clone();
    (scp.tls_server, scp.tls_client) = dicom_tls(&config)?;
    let context = Arc::new(scp);
    let https = http_tls(&config)?;

    // Before the listeners open: whoever can connect can also read a complete token file.
    let token_file = config
        .http
        .admin_token_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("admin-token"));
    let (token, new_token) =
        web_admin::AdminToken::load_or_create(&token_file).with_context(|| {
            format!(
                "cannot read or create the API token file {} (key http.admin_token_file)",
                token_file.display()
            )
        })?;
    let dicomweb = web_admin::dicomweb::DicomWebSettings::from_config(&config.http)
        .map_err(anyhow::Error::msg)?;
    let viewer = match &config.http.viewer_dir {
        Some(dir) => Some(
            web_admin::viewer::Viewer::load(dir, &config.http.dicomweb_base)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let dicom_address = format!("{}:{}", config.dicom.bind, config.dicom.port);
    let dicom_listener = tokio::net::TcpListener::bind(&dicom_address)
        .await
        .with_context(|| {
            format!("cannot listen for DICOM on {dicom_address} (key dicom.port / dicom.bind)")
        })?;
    let dicom_tls_listener =
        match &context.tls_server {
            Some(_) => {
                let address = format!("{}:{}", config.dicom.bind, config.dicom.tls.port);
                Some(tokio::net::TcpListener::bind(&address).await.with_context(|| {
                format!("cannot listen for DICOM over TLS on {address} (key dicom.tls.port)")
            })?)
            }
            None => None,
        };
    let http_listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (key http.listen)",
                config.http.listen
            )
        })?;

    let url = redact_url(&config.effective_database_url());
    println!("Strata is running.");
    println!(
        "  DICOM: AE title {} on port {} (try: echoscu -aec {} localhost {})",
        config.dicom.ae_title, config.dicom.port, config.dicom.ae_title, config.dicom.port
    );
    if context.tls_server.is_some() {
        println!(
            "  DICOM over TLS: port {}{}",
            config.dicom.tls.port,
            if config.dicom.tls.client_ca.is_some() {
                " (clients need a certificate from dicom.tls.client_ca)"
            } else {
                ""
            }
        );
    }
    let scheme = if https.is_some() { "https" } else { "http" };
    println!(
        "  Admin: {scheme}://{}/ui/ (log in with the API token below); REST API under /api",
        config.http.listen
    );
    println!(
        "  DICOMweb: {scheme}://{}{} (QIDO-RS, WADO-RS, STOW-RS; WADO-URI at /wado){}",
        config.http.listen,
        config.http.dicomweb_base,
        if viewer.is_some() {
            format!("; viewer at {scheme}://{}/viewer/", config.http.listen)
        } else {
            String::new()
        }
    );
    println!("  Index: {url}");
    println!(
        "  Node:  {} (NEARLINE targets: {})",
        config.node_id(),
        config
            .effective_targets()
            .iter()
            .map(|t| format!("{} = {}", t.name, t.location()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match new_token {
        // Shown once: the file keeps it (mode 600) for scripts; the log never sees it.
        Some(secret) => println!(
            "  API:   token created and kept in {}: {secret}",
            token_file.display()
        ),
        None => println!("  API:   token in {}", token_file.display()),
    }
    println!("  Press Ctrl-C to stop.");
    tracing::info!(ae_title = %config.dicom.ae_title, dicom = %dicom_address, http = %config.http.listen, index = %url, "started");

    let web = web_admin::router(
        web_admin::WebState {
            index: index.clone(),
            online: online.clone(),
            token,
            max_attempts: config.lifecycle.max_attempts,
            max_body_bytes: usize::try_from(config.http.max_body_bytes.0).unwrap_or(usize::MAX),
            acceptor: acceptor.clone(),
            retriever: retriever.clone(),
            dicomweb,
            viewer_enabled: viewer.is_some(),
            auditor: auditor.clone(),
        },
        viewer,
    );
    tokio::spawn(refresh_filesystems(index.clone(), online.clone()));
    let http = web_admin::server::serve(
        http_listener,
        web,
        web_admin::server::HttpLimits::from_config(&config.http),
        https,
        shutdown_signal(),
    );
    let dicom = dicom_scp::server::run(
        dicom_listener,
        dicom_tls_listener,
        context,
        shutdown_signal(),
    );
    let lifecycle = lifecycle::Lifecycle::start(
        index.clone(),
        targets,
        retriever,
        acceptor,
        auditor.clone(),
        lifecycle::Settings::from_config(&config),
    )
    .await
    .context("cannot start the lifecycle services")?;
    tokio::join!(http, dicom);
    lifecycle.shutdown().await;
    auditor.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// DICOM TLS: the listener's settings, and the client side for peers marked `tls`.
type DicomTls = (
    Option<Arc<archive_core::tls::rustls::ServerConfig>>,
    Option<Arc<archive_core::tls::rustls::ClientConfig>>,
);

fn dicom_tls(config: &Config) -> anyhow::Result<DicomTls> {
    let tls = &config.dicom.tls;
    let Some((cert, key)) = tls.identity() else {
        return Ok((None, None));
    };
    let server = tls::server_config(&tls::ServerTls {
        cert,
        key,
        client_ca: tls.client_ca.as_deref(),
        section: "dicom.tls",
        cert_key: "cert",
        key_key: "key",
    })?;
    let client = match tls.effective_peer_ca() {
        Some(ca) => Some(tls::client_config(
            ca,
            "dicom.tls.peer_ca",
            Some((cert, key)),
            "dicom.tls",
        )?),
        None => None,
    };
    Ok((Some(server), client))
}

fn http_tls(
    config: &Config,
) -> anyhow::Result<Option<Arc<archive_core::tls::rustls::ServerConfig>>> {
    let (Some(cert), Some(key)) = (&config.http.tls_cert, &config.http.tls_key) else {
        return Ok(None);
    };
    let mut server = (*tls::server_config(&tls::ServerTls {
        cert,
        key,
        client_ca: None,
        section: "http",
        cert_key: "tls_cert",
        key_key: "tls_key",
    })?)
    .clone();
    // HTTP/1.1 only (see web-admin's server): say so in ALPN.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

/// The audit trail's writer, sending to the ATNA repository in `audit.syslog` too if set.
fn start_auditor(config: &Config, index: &Index) -> anyhow::Result<Auditor> {
    let sink: Option<Arc<dyn AuditSink>> = match config.audit.syslog_address() {
        Some(address) => Some(Arc::new(UdpSyslog::connect(address).with_context(
            || format!("cannot reach the audit repository {address} (key audit.syslog)"),
        )?)),
        None => None,
    };
    Ok(Auditor::start(index.clone(), config.node_id(), sink))
}

/// Filesystems added or changed through another node's API reach this one within this time.
const FILESYSTEM_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

async fn refresh_filesystems(index: Index, online: OnlineStore) {
    let mut tick = tokio::time::interval(FILESYSTEM_REFRESH);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(error) = online.refresh(&index).await {
            tracing::warn!(%error, "cannot re-read the ONLINE filesystems; keeping the ones known");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
}
