//! STOW-RS (PS3.18 §10.5): `multipart/related; type="application/dicom"` parts streamed one
//! by one into archive-core's accept path, so a 2 GB part never sits in memory and every part
//! gets exactly what a C-STORE of it would (durability, duplicate policy, hierarchy checks).
//!
//! Parts are pipelined: once a part is spooled its accept runs as its own task while the next
//! part is read, up to [`ACCEPTS_IN_FLIGHT`] per request. Accepting one part at a time left the
//! request waiting on one fsync and one index commit per part; accepts in flight together share
//! the ingest queue's group commit, as concurrent C-STORE associations do. The answer still
//! lists the parts in request order, and is sent only once every accept has finished (also
//! when the request breaks off: the parts complete before the break are stored). Two parts
//! holding the same SOP Instance UID are then like the same instance arriving on two
//! associations at once: the duplicate policy applies to whichever is committed second.
//!
//! Answer: 200 when every part was stored, 202 when some failed (each in FailedSOPSequence with
//! its PS3.4 FailureReason), 409 when none was stored, 415 for another media type, 413 above
//! `http.stow_max_bytes`. A request cut off mid-part leaves nothing of that part behind.

use super::json::{attribute, key};
use super::{bad_request, Links, DICOM_JSON};
use crate::api::ApiError;
use crate::WebState;
use archive_core::accept::{status, Acceptor, Arrival, Identity, Refusal, Spooled};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, WARNING};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Recorded as the source of instances stored over DICOMweb (the AE title column).
const SOURCE: &str = "STOW-RS";

/// Accepts one request may have running while it reads further parts. Each holds about one
/// spool buffer (`SPILL_THRESHOLD`, 1 MiB, plus the chunk being written) in memory, the rest
/// of a bigger part is on disk. 8 fills a group commit; the number of requests at once is
/// bounded by the HTTP connection limits (`http.max_connections`, per client and in all).
const ACCEPTS_IN_FLIGHT: usize = 8;

pub async fn store(
    State(state): State<WebState>,
    links: Links,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    stow(&state, &links, &headers, None, body).await
}

pub async fn store_in_study(
    State(state): State<WebState>,
    links: Links,
    headers: HeaderMap,
    Path(study): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    stow(&state, &links, &headers, Some(study), body).await
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("STOW-RS requests may hold at most {limit} bytes (http.stow_max_bytes)"),
    )
}

/// The boundary of a `multipart/related; type="application/dicom"` body, or 415 / 400.
fn boundary_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let unsupported = |message: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    };
    let text = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unsupported("Content-Type must be multipart/related; type=\"application/dicom\"".into())
        })?;
    let mime: mime::Mime = text
        .parse()
        .map_err(|_| unsupported(format!("unreadable Content-Type `{text}`")))?;
    if mime.essence_str() != "multipart/related" {
        return Err(unsupported(format!(
            "{} is not accepted: send multipart/related; type=\"application/dicom\"",
            mime.essence_str()
        )));
    }
    if let Some(part_type) = mime.get_param("type") {
        if part_type.as_str() != "application/dicom" {
            return Err(unsupported(format!(
                "parts of type {part_type} are not accepted: only application/dicom (Part-10 files)"
            )));
        }
    }
    mime.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_string())
        .ok_or_else(|| bad_request("Content-Type has no boundary"))
}

/// The body's parts, read as they arrive. Bodies without a length are counted as they
/// arrive too (in `received`): beyond `limit` the stream fails.
fn parts_of(
    body: Body,
    boundary: String,
    limit: u64,
    received: Arc<AtomicU64>,
) -> multer::Multipart<'static> {
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        let total = received.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
        if total > limit {
            return Err(std::io::Error::other(
                "request larger than http.stow_max_bytes",
            ));
        }
        Ok::<Bytes, std::io::Error>(chunk)
    });
    multer::Multipart::new(stream, boundary)
}

/// What became of one part.
enum PartOutcome {
    Stored(Identity),
    Failed(Option<Identity>, u16, String),
}

async fn stow(
    state: &WebState,
    links: &Links,
    headers: &HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let boundary = boundary_of(headers)?;
    let limit = state.dicomweb.stow_max_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let received = Arc::new(AtomicU64::new(0));
    let mut multipart = parts_of(body, boundary, limit, received.clone());
    let mut outcomes = Outcomes::default();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return Err(outcomes.broken_off(error, &received, limit).await),
        };
        let declared_type = field.content_type().map(|m| m.essence_str().to_string());
        if declared_type
            .as_deref()
            .is_some_and(|t| t != "application/dicom")
        {
            // Read past it; it is reported, not stored.
            while let Ok(Some(_)) = field.chunk().await {}
            outcomes.push(PartOutcome::Failed(
                None,
                status::CANNOT_UNDERSTAND,
                format!(
                    "part of type {} is not application/dicom",
                    declared_type.unwrap_or_default()
                ),
            ));
            continue;
        }
        let mut spooled = match state.acceptor.begin() {
            Ok(spooled) => Some(spooled),
            Err(refusal) => {
                outcomes.push(PartOutcome::Failed(
                    None,
                    refusal.status(),
                    refusal.kind().into(),
                ));
                None
            }
        };
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if let Some(writer) = spooled.as_mut() {
                        if let Err(refusal) = writer.write_bytes(chunk).await {
                            outcomes.push(PartOutcome::Failed(
                                None,
                                refusal.status(),
                                refusal.kind().into(),
                            ));
                            spooled = None;
                        }
                    }
                }
                Ok(None) => break,
                // Cut off mid-part: what was spooled of it is dropped (and removed) here.
                Err(error) => return Err(outcomes.broken_off(error, &received, limit).await),
            }
        }
        let Some(spooled) = spooled else { continue };
        outcomes
            .accepting(tokio::spawn(accept_part(
                state.acceptor.clone(),
                spooled,
                study.clone(),
            )))
            .await;
    }
    let outcomes = outcomes.finish().await;
    if outcomes.is_empty() {
        return Err(bad_request("the request holds no parts"));
    }
    Ok(answer(links, study.as_deref(), outcomes))
}

/// One completely received part through the accept path.
async fn accept_part(acceptor: Acceptor, spooled: Spooled, study: Option<String>) -> PartOutcome {
    let arrival = Arrival {
        transfer_syntax: None,
        source: SOURCE,
        study_uid: study.as_deref(),
        ..Arrival::default()
    };
    match acceptor.accept(spooled, arrival).await {
        Ok(accepted) => PartOutcome::Stored(accepted.identity),
        Err(refused) => {
            tracing::info!(
                kind = refused.reason.kind(),
                status = format_args!("{:#06X}", refused.reason.status()),
                "STOW-RS part refused"
            );
            PartOutcome::Failed(
                refused.identity,
                refused.reason.status(),
                public_reason(&refused.reason),
            )
        }
    }
}

/// The parts' outcomes in request order, some still being accepted.
#[derive(Default)]
struct Outcomes {
    /// Outcomes taken out of `pending`, in order.
    settled: Vec<PartOutcome>,
    /// The later ones, in order: known outcomes and running accepts.
    pending: FuturesOrdered<BoxFuture<'static, PartOutcome>>,
}

impl Outcomes {
    fn push(&mut self, outcome: PartOutcome) {
        self.pending.push_back(std::future::ready(outcome).boxed());
    }

    /// Adds a running accept; at the cap, first waits for the oldest outcome.
    async fn accepting(&mut self, task: JoinHandle<PartOutcome>) {
        if self.pending.len() >= ACCEPTS_IN_FLIGHT {
            self.settled.extend(self.pending.next().await);
        }
        self.pending.push_back(
            task.map(|joined| {
                joined.unwrap_or_else(|error| {
                    tracing::error!(%error, "STOW-RS accept task failed");
                    PartOutcome::Failed(
                        None,
                        status::PROCESSING_FAILURE,
                        "the part could not be processed".into(),
                    )
                })
            })
            .boxed(),
        );
    }

    /// The error for a request broken off or malformed after some parts, answered only once
    /// the accepts of the parts already complete have finished: those parts are stored (as
    /// C-STOREs before an aborted association stay stored), and none is left half done.
    async fn broken_off(self, error: multer::Error, received: &AtomicU64, limit: u64) -> ApiError {
        self.finish().await;
        broken_request(error, received, limit)
    }

    /// Every outcome, once every accept has finished.
    async fn finish(mut self) -> Vec<PartOutcome> {
        while let Some(outcome) = self.pending.next().await {
            self.settled.push(outcome);
        }
        self.settled
    }
}

/// The reason as a client may read it: conflicts name patient IDs, so they are told by kind.
fn public_reason(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Conflict(conflict) => {
            format!("conflicts with the stored hierarchy ({})", conflict.kind())
        }
        other => other.to_string(),
    }
}

/// A malformed or cut-off body: 413 when it was the size limit, 400 otherwise.
fn broken_request(error: multer::Error, received: &AtomicU64, limit: u64) -> ApiError {
    if received.load(Ordering::Relaxed) > limit {
        return too_large(limit);
    }
    tracing::info!(%error, "STOW-RS request broken off or malformed");
    bad_request(format!("malformed or incomplete multipart body: {error}"))
}

fn answer(links: &Links, study: Option<&str>, outcomes: Vec<PartOutcome>) -> Response {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut warnings = Vec::new();
    for (position, outcome) in outcomes.iter().enumerate() {
        match outcome {
            PartOutcome::Stored(identity) => {
                let mut item = sop_reference(identity);
                item.insert(
                    key(tags::RETRIEVE_URL.group(), tags::RETRIEVE_URL.element()),
                    attribute(
                        VR::UR,
                        &links.instance(
                            &identity.study_uid,
                            &identity.series_uid,
                            &identity.sop_instance_uid,
                        ),
                    ),
                );
                referenced.push(Value::Object(item));
            }
            PartOutcome::Failed(identity, reason, message) => {
                let mut item = identity.as_ref().map(sop_reference).unwrap_or_default();
                item.insert(
                    key(tags::FAILURE_REASON.group(), tags::FAILURE_REASON.element()),
                    json!({ "vr": "US", "Value": [reason] }),
                );
                failed.push(Value::Object(item));
                warnings.push(format!("part {}: {message}", position + 1));
            }
        }
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut object = Map::new();
    if let Some(study) = study {
        object.insert(
            key(tags::RETRIEVE_URL.group(), tags::RETRIEVE_URL.element()),
            attribute(VR::UR, &links.study(study)),
        );
    }
    for (tag, items) in [
        (tags::FAILED_SOP_SEQUENCE, failed),
        (tags::REFERENCED_SOP_SEQUENCE, referenced),
    ] {
        if !items.is_empty() {
            let sequence = json!({ "vr": "SQ", "Value": items });
            object.insert(key(tag.group(), tag.element()), sequence);
        }
    }
    let mut response = (
        status,
        [(CONTENT_TYPE, DICOM_JSON)],
        Value::Object(object).to_string(),
    )
        .into_response();
    for warning in warnings {
        let text = warning.replace(['"', '\r', '\n'], " ");
        if let Ok(value) = HeaderValue::from_str(&format!("299 strata \"{text}\"")) {
            response.headers_mut().append(WARNING, value);
        }
    }
    response
}

fn sop_reference(identity: &Identity) -> Map<String, Value> {
    let mut item = Map::new();
    item.insert(
        key(
            tags::REFERENCED_SOP_CLASS_UID.group(),
            tags::REFERENCED_SOP_CLASS_UID.element(),
        ),
        attribute(VR::UI, &identity.sop_class_uid),
    );
    item.insert(
        key(
            tags::REFERENCED_SOP_INSTANCE_UID.group(),
            tags::REFERENCED_SOP_INSTANCE_UID.element(),
        ),
        attribute(VR::UI, &identity.sop_instance_uid),
    );
    item
}

/// Robustness of what a client controls: the Content-Type header and the multipart body, read
/// exactly as `stow` reads them. Nothing panics; broken bodies are errors; well-formed ones
/// come through part for part.
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every part's bytes, or the error that ended the body.
    fn read_all(body: Vec<u8>, boundary: &str, limit: u64) -> Result<Vec<Vec<u8>>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let received = Arc::new(AtomicU64::new(0));
            let mut multipart = parts_of(Body::from(body), boundary.to_string(), limit, received);
            let mut parts = Vec::new();
            while let Some(mut field) = multipart.next_field().await.map_err(|e| e.to_string())? {
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
                    bytes.extend_from_slice(&chunk);
                }
                parts.push(bytes);
            }
            Ok(parts)
        })
    }

    fn body_of(parts: &[Vec<u8>], boundary: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for part in parts {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(part);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    fn headers_with(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(CONTENT_TYPE, value);
        }
        headers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_content_type_is_a_boundary_or_a_4xx(text in "\\PC{0,120}") {
            if let Err(error) = boundary_of(&headers_with(&text)) {
                prop_assert!(error.status().is_client_error());
            }
        }

        #[test]
        fn any_body_is_parts_or_an_error(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_all(body, "xyz", 1 << 20);
        }

        #[test]
        fn well_formed_bodies_come_through_and_mutated_ones_do_not_panic(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..4),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            // A boundary that cannot occur in the parts' bytes (they would need its text).
            let boundary = "strata-proptest-boundary-7f3a";
            let body = body_of(&parts, boundary);
            prop_assert_eq!(read_all(body.clone(), boundary, 1 << 20), Ok(parts.clone()));
            let mut mutated = body.clone();
            for (at, value) in flips {
                let at = at.index(mutated.len());
                mutated[at] = value;
            }
            let _ = read_all(mutated, boundary, 1 << 20);
            let cut = cut.index(body.len());
            prop_assert!(read_all(body[..cut].to_vec(), boundary, 1 << 20).is_err() || cut == 0 || cut + 2 >= body.len());
            // Over the size limit: an error, never a partial success.
            prop_assert!(read_all(body.clone(), boundary, (body.len() as u64).saturating_sub(1)).is_err());
        }
    }
}
