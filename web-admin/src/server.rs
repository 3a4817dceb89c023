//! The HTTP listener: axum's router behind hyper's HTTP/1.1 connection handling with the limits
//! a server on a hospital network needs, which `axum::serve` does not expose.
//!
//! - A client has `header_timeout` to send a complete request header, counted from the moment
//!   the connection is ready for a request (so a kept-alive connection that stays idle that
//!   long is closed too): slow-header clients cannot pile up.
//! - Connections are admitted per client address and in total (loopback, where a reverse
//!   proxy would connect from, is capped only per host at the total); extra ones are closed
//!   at once.
//! - HTTP/1.1 only: the HTTP/2 prior-knowledge probe of hyper's auto mode reads without a
//!   timeout, and browsers use HTTP/2 only over TLS.

use archive_core::admission::{Admission, AdmissionLimits};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::util::MapRequest;

/// In a request's extensions when its connection is TLS (HTTPS).
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// After shutdown is asked for, connections still serving a request get this long to finish.
const DRAIN_TIME: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl HttpLimits {
    pub fn from_config(http: &archive_core::config::HttpConfig) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            max_connections: http.max_connections as usize,
            max_connections_per_client: http.max_connections_per_client as usize,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(TlsAcceptor::from);
    let admission = Admission::new(
        "http",
        AdmissionLimits {
            max_total: limits.max_connections,
            max_per_host: limits.max_connections_per_client,
            max_per_trusted_host: limits.max_connections,
        },
        [],
        true,
    );
    let mut connection = http1::Builder::new();
    connection
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = admission.try_admit(peer.ip()) else {
            continue;
        };
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        // Handlers and the audit trail see the client's address as axum's `ConnectInfo`,
        // and whether it came over TLS (session cookies are then `Secure`).
        let over_tls = tls.is_some();
        let service = TowerToHyperService::new(MapRequest::new(
            app.clone(),
            move |mut request: axum::extract::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                if over_tls {
                    request.extensions_mut().insert(OverTls);
                }
                request
            },
        ));
        let connection = connection.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(connection.serve_connection(TokioIo::new(socket), service))
                        .await
                }
                // The handshake counts against the header time: a client that stalls in it
                // holds a connection no longer than one that stalls in its header.
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(connection.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = served {
                // Timeouts, resets and malformed requests: the client's problem, not ours.
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIME, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("HTTP connections still open after the drain time; closing them");
    }
}
