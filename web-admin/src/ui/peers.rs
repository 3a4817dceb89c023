//! DICOM peers (AE titles): where C-MOVE sends, and what each may do.

use super::session::CheckedForm;
use super::{csrf_field, error_page, redirect_with, signed_in_page, Notice, Session};
use crate::settings_api;
use crate::WebState;
use archive_core::model::AePeer;
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use maud::html;

pub async fn list(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(notice): Query<Notice>,
) -> Response {
    let peers = match state.index.ae_list().await {
        Ok(peers) => peers,
        Err(error) => return error_page(&session, "AE titles", error.into()),
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let content = html! {
        section.card {
            table #peers {
                thead { tr { th { "AE title" } th { "Host" } th.num { "Port" } th { "Query" } th { "Retrieve" } th { "Store" } th { "TLS" } th { "Description" } th { "" } } }
                tbody {
                    @if peers.is_empty() { tr { td colspan="9" .muted { "No peer: only callers from this machine are accepted, and C-MOVE has no destination." } } }
                    @for peer in &peers {
                        tr {
                            td { code { (peer.ae_title) } } td { (peer.host) } td.num { (peer.port) }
                            td { (yes_no(peer.can_query)) } td { (yes_no(peer.can_retrieve)) } td { (yes_no(peer.can_store)) }
                            td { (yes_no(peer.tls)) }
                            td { (peer.description) }
                            td.actions {
                                form method="post" action={ "/ui/ae-titles/" (peer.ae_title) "/remove" } data-confirm="Remove this peer?" {
                                    (csrf_field(&session)) button.danger type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Add or change a peer" }
            form.stacked method="post" action="/ui/ae-titles" {
                (csrf_field(&session))
                label { "AE title" input name="ae_title" required maxlength="16"; }
                label { "Host" input name="host" required; }
                label { "Port" input name="port" required inputmode="numeric" value="104"; }
                label { "Description" input name="description"; }
                label.check { input type="checkbox" name="can_query" checked; "May query (C-FIND)" }
                label.check { input type="checkbox" name="can_retrieve" checked; "May retrieve (C-MOVE, C-GET)" }
                label.check { input type="checkbox" name="can_store" checked; "May store (C-STORE)" }
                label.check { input type="checkbox" name="tls"; "TLS for associations to it (C-MOVE)" }
                button type="submit" { "Save peer" }
            }
        }
    };
    signed_in_page("AE titles", "/ui/ae-titles", &session, &notice, content)
}

pub async fn save(State(state): State<WebState>, form: CheckedForm) -> Response {
    let port = form.text("port");
    let outcome = match port.parse::<u16>() {
        Ok(port) => {
            let peer = AePeer {
                ae_title: form.text("ae_title"),
                host: form.text("host"),
                port,
                description: form.text("description"),
                can_query: form.checked("can_query"),
                can_retrieve: form.checked("can_retrieve"),
                can_store: form.checked("can_store"),
                tls: form.checked("tls"),
            };
            settings_api::save_peer(&state, peer)
                .await
                .map(|peer| format!("Peer {} saved.", peer.ae_title))
        }
        Err(_) => Err(crate::api::ApiError::bad_request(
            "port",
            format!("`{port}` is not a port number (1-65535)"),
        )),
    };
    redirect_with("/ui/ae-titles", outcome)
}

pub async fn remove(
    State(state): State<WebState>,
    Path(ae): Path<String>,
    _form: CheckedForm,
) -> Response {
    let outcome = settings_api::remove_peer_named(&state, &ae)
        .await
        .map(|_| format!("Peer {ae} removed."));
    redirect_with("/ui/ae-titles", outcome)
}
