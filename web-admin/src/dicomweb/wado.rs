//! WADO-RS retrievals (PS3.18 §10.4) and WADO-URI (§9): objects through archive-core's
//! retriever, so a NEARLINE-only study comes through the retrieve cache (one fetch per pack,
//! however many ask) and a single instance or frame through a ranged read of its member.
//! Answers stream part by part; a study is never held in memory.

use super::accept::{self, Wanted};
use super::multipart::{content_type, new_boundary, PartWriter};
use super::render_params::RenderParams;
use super::{bad_request, not_found};
use crate::api::ApiError;
use crate::WebState;
use archive_core::dicom_header::part10_header;
use archive_core::index::InstanceLocation;
use archive_core::query::Level;
use archive_core::retrieve::OpenedInstance;
use archive_core::transcode::{convert, is_native};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::value::Value as DicomValue;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::collections::HashMap;

pub async fn retrieve_study(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    retrieve(state, &headers, &study, None, None).await
}

pub async fn retrieve_series(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    retrieve(state, &headers, &study, Some(&series), None).await
}

pub async fn retrieve_instance(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    retrieve(state, &headers, &study, Some(&series), Some(&instance)).await
}

/// The instances under the path's UIDs, from the index; 404 when there are none.
pub(super) async fn locations(
    state: &WebState,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<InstanceLocation>, ApiError> {
    let (level, uid) = match (series, instance) {
        (_, Some(instance)) => (Level::Image, instance),
        (Some(series), None) => (Level::Series, series),
        (None, None) => (Level::Study, study),
    };
    let mut found = state
        .index
        .retrieve_locations(level, &[uid.to_string()])
        .await?;
    found.retain(|l| l.study_uid == study && series.is_none_or(|s| l.series_uid == s));
    if found.is_empty() {
        let what = match (series, instance) {
            (_, Some(instance)) => format!(
                "instance {instance} of series {} in study {study}",
                series.unwrap_or("")
            ),
            (Some(series), None) => format!("series {series} in study {study}"),
            (None, None) => format!("study {study}"),
        };
        return Err(not_found(format!("no {what} is stored here")));
    }
    Ok(found)
}

async fn retrieve(
    state: WebState,
    headers: &HeaderMap,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Response, ApiError> {
    let wanted = accept::wanted_for_objects(headers)?;
    let found = locations(&state, study, series, instance).await?;
    if let Wanted(Some(target)) = &wanted {
        if let Some(stuck) = found.iter().find(|l| {
            &l.transfer_syntax != target && !(is_native(&l.transfer_syntax) && is_native(target))
        }) {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!(
                    "instance {} is stored in {} and cannot be converted to {target} without loss; ask with transfer-syntax=*",
                    stuck.sop_uid, stuck.transfer_syntax
                ),
            ));
        }
    }
    let boundary = new_boundary();
    let (writer, body) = PartWriter::new(boundary.clone());
    let single = instance.is_some();
    let study = study.to_string();
    tokio::spawn(async move {
        stream_objects(&state, found, wanted, writer, single).await;
        if let Err(error) = state
            .index
            .touch_studies(
                std::slice::from_ref(&study),
                archive_core::index::now_millis(),
            )
            .await
        {
            tracing::warn!(%error, "cannot record study access");
        }
    });
    Ok((
        [(CONTENT_TYPE, content_type("application/dicom", &boundary))],
        body,
    )
        .into_response())
}

/// Instances opened ahead of the one being sent: opening (a file read, or waiting for a pack
/// member) overlaps with sending, and memory stays bounded by this many opened instances.
const OPEN_AHEAD: usize = 4;

async fn stream_objects(
    state: &WebState,
    found: Vec<InstanceLocation>,
    wanted: Wanted,
    mut writer: PartWriter,
    single: bool,
) {
    use futures_util::StreamExt;
    let retriever = state.retriever.clone();
    let mut opened_in_order = futures_util::stream::iter(found)
        .map(move |location| {
            let retriever = retriever.clone();
            async move {
                let opened = if single {
                    retriever.open_single(&location).await
                } else {
                    retriever.open(&location).await
                };
                (location, opened)
            }
        })
        .buffered(OPEN_AHEAD);
    while let Some((location, opened)) = opened_in_order.next().await {
        let opened = match opened {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(%error, sop_instance_uid = %location.sop_uid, "WADO-RS: cannot read instance; answer broken off");
                writer.fail(error.to_string()).await;
                return;
            }
        };
        let syntax = wanted
            .0
            .clone()
            .unwrap_or_else(|| location.transfer_syntax.clone());
        if let Err(error) = send_object(&mut writer, opened, &syntax).await {
            tracing::warn!(%error, sop_instance_uid = %location.sop_uid, "WADO-RS: answer broken off");
            writer.fail(error).await;
            return;
        }
    }
    writer.finish().await;
}

/// One part: its header and a file meta group for the syntax sent, then the data set as
/// stored or converted. `Err` ends the answer.
async fn send_object(
    writer: &mut PartWriter,
    mut opened: OpenedInstance,
    syntax: &str,
) -> Result<(), String> {
    let location = opened.location.clone();
    let header = part10_header(&location.sop_class_uid, &location.sop_uid, syntax, "")?;
    if !writer
        .begin_part_with(
            &format!("application/dicom; transfer-syntax={syntax}"),
            &header,
        )
        .await
    {
        return Err("client gone".into());
    }
    if syntax == location.transfer_syntax {
        while let Some(chunk) = opened.next_chunk().await.map_err(|e| e.to_string())? {
            if !writer.send(Bytes::from(chunk)).await {
                return Err("client gone".into());
            }
        }
        return Ok(());
    }
    let stored = opened.read_all().await.map_err(|e| e.to_string())?;
    let from = location.transfer_syntax.clone();
    let to = syntax.to_string();
    let converted = tokio::task::spawn_blocking(move || convert(&stored, &from, &to))
        .await
        .map_err(|e| e.to_string())??;
    if writer.send(Bytes::from(converted)).await {
        Ok(())
    } else {
        Err("client gone".into())
    }
}

/// The whole data set of one instance (a NEARLINE one by a ranged read): what frames, bulk
/// data and WADO-URI work on. 503 when the copy cannot be read now.
pub(super) async fn read_data_set(
    state: &WebState,
    location: &InstanceLocation,
) -> Result<Vec<u8>, ApiError> {
    let unavailable = |e: archive_core::retrieve::RetrieveError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    };
    let opened = state
        .retriever
        .open_single(location)
        .await
        .map_err(unavailable)?;
    opened.read_all().await.map_err(unavailable)
}

/// `…/instances/{instance}/frames/{list}`: uncompressed frames as `application/octet-stream`,
/// compressed ones as stored when the request accepts that.
pub async fn frames(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let numbers: Vec<usize> = list
        .split(',')
        .map(|n| n.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            bad_request(format!(
                "frame list `{list}`: must be numbers from 1, separated by commas"
            ))
        })?;
    let wish = accept::wanted_for_frames(&headers);
    let location = locations(&state, &study, Some(&series), Some(&instance))
        .await?
        .remove(0);
    let syntax = location.transfer_syntax.clone();
    let native = is_native(&syntax) && syntax != "1.2.840.10008.1.2.2";
    let stored_media = media_type_of(&syntax);
    if native && !wish.uncompressed {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "uncompressed frames are served as application/octet-stream",
        ));
    }
    if !(native || wish.as_stored || wish.media_types.iter().any(|m| m == stored_media)) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("the frames are stored compressed ({syntax}) and served as stored: accept {stored_media} or transfer-syntax=*"),
        ));
    }
    let data_set = read_data_set(&state, &location).await?;
    let wanted = numbers.clone();
    let stored_syntax = syntax.clone();
    let frames =
        tokio::task::spawn_blocking(move || split_frames(&data_set, &stored_syntax, &wanted))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
    let (part_type, part_content) = if native {
        (
            "application/octet-stream",
            format!(
                "application/octet-stream; transfer-syntax={}",
                accept::EXPLICIT_LE
            ),
        )
    } else {
        (
            stored_media,
            format!("{stored_media}; transfer-syntax={syntax}"),
        )
    };
    let boundary = new_boundary();
    let (mut writer, body) = PartWriter::new(boundary.clone());
    tokio::spawn(async move {
        for frame in frames {
            if !writer.begin_part(&part_content).await || !writer.send(Bytes::from(frame)).await {
                return;
            }
        }
        writer.finish().await;
    });
    Ok(([(CONTENT_TYPE, content_type(part_type, &boundary))], body).into_response())
}

/// The media type PS3.18 Table 8.7.4-1 gives compressed pixel data of a transfer syntax.
fn media_type_of(syntax: &str) -> &'static str {
    match syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.5" => "image/x-dicom-rle",
        _ => "application/octet-stream",
    }
}

/// The requested frames (1-based) of a data set's Pixel Data.
fn split_frames(data_set: &[u8], syntax: &str, wanted: &[usize]) -> Result<Vec<Vec<u8>>, ApiError> {
    let ts = TransferSyntaxRegistry
        .get(syntax)
        .ok_or_else(|| bad_request(format!("unknown transfer syntax {syntax}")))?;
    let object = InMemDicomObject::read_dataset_with_ts(data_set, ts).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unreadable",
            format!("cannot read the stored object: {e}"),
        )
    })?;
    let number = |tag| {
        object
            .get(tag)
            .and_then(|e| e.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let count = number(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    if let Some(missing) = wanted.iter().find(|n| **n > count) {
        return Err(not_found(format!(
            "frame {missing}: the instance has {count} frame(s)"
        )));
    }
    let pixel_data = object
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| not_found("the instance has no pixel data"))?;
    match pixel_data.value() {
        DicomValue::PixelSequence(sequence) => {
            let fragments = sequence.fragments();
            let per_frame: Vec<Vec<u8>> = if count == 1 {
                vec![fragments.concat()]
            } else if fragments.len() == count {
                fragments.to_vec()
            } else {
                return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", format!(
                    "{} fragments for {count} frames: frames spanning fragments are not split yet", fragments.len()
                )));
            };
            Ok(wanted.iter().map(|n| per_frame[n - 1].clone()).collect())
        }
        value => {
            let bytes = value.to_bytes().map_err(|e| bad_request(e.to_string()))?;
            let rows = number(tags::ROWS).unwrap_or(0);
            let columns = number(tags::COLUMNS).unwrap_or(0);
            let samples = number(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
            let bits = number(tags::BITS_ALLOCATED).unwrap_or(8);
            let frame_len = rows * columns * samples * bits.div_ceil(8);
            if frame_len == 0 || bytes.len() < frame_len * count {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unreadable",
                    "pixel data shorter than its frames",
                ));
            }
            Ok(wanted
                .iter()
                .map(|n| bytes[(n - 1) * frame_len..n * frame_len].to_vec())
                .collect())
        }
    }
}

/// WADO-URI for legacy viewers: one object as `application/dicom`, or one frame rendered as
/// `image/jpeg` (the default) or `image/png`.
pub async fn wado_uri(
    State(state): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let param = |name: &str| {
        params
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad_request(format!("query parameter `{name}` is required")))
    };
    if param("requestType")? != "WADO" {
        return Err(bad_request("query parameter `requestType`: must be WADO"));
    }
    let (study, series, object) = (param("studyUID")?, param("seriesUID")?, param("objectUID")?);
    // The first type of `contentType` served wins; image/jpeg is the standard's default.
    let content_type_param = params
        .get("contentType")
        .map(String::as_str)
        .unwrap_or("image/jpeg");
    let served = content_type_param
        .split(',')
        .map(|t| t.trim())
        .find(|t| matches!(*t, "application/dicom" | "image/jpeg" | "image/png"))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!("query parameter `contentType`: {content_type_param} is not served; use application/dicom, image/jpeg or image/png"),
            )
        })?;
    let location = locations(&state, study, Some(series), Some(object))
        .await?
        .remove(0);
    if served != "application/dicom" {
        let render = RenderParams::for_wado_uri(&params, served)?;
        let frame = match params.get("frameNumber").map(|n| n.trim()) {
            None | Some("") => 1,
            Some(n) => n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                bad_request(format!(
                    "query parameter `frameNumber`: `{n}` is not a number from 1"
                ))
            })?,
        };
        return super::rendered::render_one(&state, location, frame, render).await;
    }
    let target = match params.get("transferSyntax").map(|t| t.trim()) {
        None | Some("") | Some("*") => location.transfer_syntax.clone(),
        Some(uid) if uid == location.transfer_syntax || (is_native(uid) && is_native(&location.transfer_syntax)) => uid.to_string(),
        Some(uid) => {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!("query parameter `transferSyntax`: the object is stored in {} and cannot be converted to {uid} without loss", location.transfer_syntax),
            ))
        }
    };
    let mut bytes = part10_header(&location.sop_class_uid, &location.sop_uid, &target, "")
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    let data_set = read_data_set(&state, &location).await?;
    if target == location.transfer_syntax {
        bytes.extend_from_slice(&data_set);
    } else {
        let from = location.transfer_syntax.clone();
        let to = target.clone();
        let converted = tokio::task::spawn_blocking(move || convert(&data_set, &from, &to))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
        bytes.extend_from_slice(&converted);
    }
    Ok(([(CONTENT_TYPE, "application/dicom")], bytes).into_response())
}

/// `…/instances/{instance}/bulkdata/{tag}`: what a metadata BulkDataURI points at. Pixel Data
/// comes frame by frame as `/frames` would send it; other values as one
/// `application/octet-stream` part in Little Endian.
pub async fn bulkdata(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((study, series, instance, tag_text)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let tag = u32::from_str_radix(&tag_text, 16)
        .ok()
        .filter(|_| tag_text.len() == 8)
        .map(|n| dicom_core::Tag((n >> 16) as u16, (n & 0xFFFF) as u16))
        .ok_or_else(|| {
            bad_request(format!(
                "bulk data tag `{tag_text}`: must be 8 hexadecimal digits"
            ))
        })?;
    if tag == tags::PIXEL_DATA {
        let location = locations(&state, &study, Some(&series), Some(&instance))
            .await?
            .remove(0);
        let count = location.number_of_frames.unwrap_or(1).max(1);
        let all = (1..=count)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        return frames(State(state), headers, Path((study, series, instance, all))).await;
    }
    let location = locations(&state, &study, Some(&series), Some(&instance))
        .await?
        .remove(0);
    let data_set = read_data_set(&state, &location).await?;
    let syntax = location.transfer_syntax.clone();
    let value = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let ts = TransferSyntaxRegistry
            .get(&syntax)
            .ok_or_else(|| bad_request(format!("unknown transfer syntax {syntax}")))?;
        let object = InMemDicomObject::read_dataset_with_ts(&data_set[..], ts).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable",
                format!("cannot read the stored object: {e}"),
            )
        })?;
        let element = object
            .get(tag)
            .ok_or_else(|| not_found(format!("the instance has no attribute {tag_text}")))?;
        element
            .value()
            .to_bytes()
            .map(|bytes| bytes.into_owned())
            .map_err(|e| bad_request(format!("attribute {tag_text} has no binary value: {e}")))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let boundary = new_boundary();
    let (mut writer, body) = PartWriter::new(boundary.clone());
    tokio::spawn(async move {
        if writer
            .begin_part(&format!(
                "application/octet-stream; transfer-syntax={}",
                accept::EXPLICIT_LE
            ))
            .await
            && writer.send(Bytes::from(value)).await
        {
            writer.finish().await;
        }
    });
    Ok((
        [(
            CONTENT_TYPE,
            content_type("application/octet-stream", &boundary),
        )],
        body,
    )
        .into_response())
}
