//! Rendered images (PS3.18 §10.4.1.1.3 `/rendered`, §10.4.1.1.4 `/thumbnail`): one frame
//! decoded by dicom-pixeldata (native syntaxes, RLE and the JPEG family; anything else is 406,
//! as the standard asks of a server that cannot render), windowed, fitted to the viewport and
//! encoded as JPEG or PNG. Objects come through the same retriever as WADO-RS, so a
//! NEARLINE-only instance is rendered from a ranged read of its pack member.

use super::multipart::{content_type, new_boundary, PartWriter};
use super::render_params::{Output, RenderParams};
use super::wado::{locations, read_data_set};
use super::{bad_request, not_found};
use crate::api::ApiError;
use crate::WebState;
use archive_core::index::InstanceLocation;
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_pixeldata::image::imageops::FilterType;
use dicom_pixeldata::image::{codecs, DynamicImage, ImageEncoder};
use dicom_pixeldata::{ConvertOptions, PixelDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::collections::HashMap;

/// The longest side of a thumbnail when the request names no viewport.
const THUMBNAIL_SIDE: u32 = 128;

type Params = Query<HashMap<String, String>>;

/// Path parameters by name: `study`, and `series` / `instance` where the route has them.
type Uids = Path<HashMap<String, String>>;

/// The thumbnail side when the route ends in `/thumbnail`, `None` for `/rendered`.
fn thumbnail_side(matched: &MatchedPath) -> Option<u32> {
    matched
        .as_str()
        .ends_with("/thumbnail")
        .then_some(THUMBNAIL_SIDE)
}

/// `…/instances/{instance}/rendered` and `…/thumbnail`: the instance's first frame.
pub async fn instance(
    State(state): State<WebState>,
    headers: HeaderMap,
    matched: MatchedPath,
    Path((study, series, instance)): Path<(String, String, String)>,
    Query(query): Params,
) -> Result<Response, ApiError> {
    let params = RenderParams::parse(&headers, &query, thumbnail_side(&matched))?;
    let location = one_instance(&state, &study, &series, &instance).await?;
    render_one(&state, location, 1, params).await
}

pub async fn frame(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    Query(query): Params,
) -> Result<Response, ApiError> {
    let params = RenderParams::parse(&headers, &query, None)?;
    // One image per answer: a list of frames would be a multipart of images, which no viewer
    // asks for; say so rather than render only the first.
    let number = list
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            bad_request(format!(
                "frame `{list}`: rendered frames are asked one at a time, by a number from 1"
            ))
        })?;
    let location = one_instance(&state, &study, &series, &instance).await?;
    render_one(&state, location, number, params).await
}

/// Study and series level. `/thumbnail`: one image, the middle one of the largest series.
/// `/rendered`: every instance's first frame, one image part each, rendered one at a time
/// as the answer streams.
pub async fn collection(
    State(state): State<WebState>,
    headers: HeaderMap,
    matched: MatchedPath,
    Path(uids): Uids,
    Query(query): Params,
) -> Result<Response, ApiError> {
    let thumbnail = thumbnail_side(&matched);
    let params = RenderParams::parse(&headers, &query, thumbnail)?;
    let study = uids.get("study").map(String::as_str).unwrap_or_default();
    let found = locations(&state, study, uids.get("series").map(String::as_str), None).await?;
    match thumbnail {
        Some(_) => render_one(&state, representative(found), 1, params).await,
        None => render_many(state, found, params),
    }
}

async fn one_instance(
    state: &WebState,
    study: &str,
    series: &str,
    instance: &str,
) -> Result<InstanceLocation, ApiError> {
    let mut found = locations(state, study, Some(series), Some(instance)).await?;
    Ok(found.remove(0))
}

/// What a series or study shows as its thumbnail: the middle instance (by Instance Number) of
/// its largest series, the slice a radiologist would look at first in a CT or MR stack.
fn representative(mut found: Vec<InstanceLocation>) -> InstanceLocation {
    let mut sizes: HashMap<String, usize> = HashMap::new();
    for location in &found {
        *sizes.entry(location.series_uid.clone()).or_default() += 1;
    }
    let largest = sizes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(uid, _)| uid.clone())
        .unwrap_or_default();
    found.retain(|l| l.series_uid == largest);
    found.sort_by(|a, b| (a.instance_number, &a.sop_uid).cmp(&(b.instance_number, &b.sop_uid)));
    let middle = found.len() / 2;
    found.swap_remove(middle)
}

pub(super) async fn render_one(
    state: &WebState,
    location: InstanceLocation,
    frame: u32,
    params: RenderParams,
) -> Result<Response, ApiError> {
    check_decodable(&location)?;
    let output = params.output;
    let data_set = read_data_set(state, &location).await?;
    let image = tokio::task::spawn_blocking(move || render(&data_set, &location, frame, &params))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(([(CONTENT_TYPE, output.media_type())], image).into_response())
}

fn render_many(
    state: WebState,
    found: Vec<InstanceLocation>,
    params: RenderParams,
) -> Result<Response, ApiError> {
    for location in &found {
        check_decodable(location)?;
    }
    let part_type = params.output.media_type();
    let boundary = new_boundary();
    let (mut writer, body) = PartWriter::new(boundary.clone());
    tokio::spawn(async move {
        for location in found {
            let sop_uid = location.sop_uid.clone();
            let data_set = match read_data_set(&state, &location).await {
                Ok(data_set) => data_set,
                Err(error) => {
                    writer.fail(error.message().to_string()).await;
                    return;
                }
            };
            let params = params.clone();
            let rendered =
                tokio::task::spawn_blocking(move || render(&data_set, &location, 1, &params)).await;
            let image = match rendered {
                Ok(Ok(image)) => image,
                Ok(Err(error)) => {
                    tracing::warn!(sop_instance_uid = %sop_uid, error = error.message(), "rendered: answer broken off");
                    writer.fail(error.message().to_string()).await;
                    return;
                }
                Err(error) => {
                    writer.fail(error.to_string()).await;
                    return;
                }
            };
            if !writer.begin_part(part_type).await || !writer.send(Bytes::from(image)).await {
                return;
            }
        }
        writer.finish().await;
    });
    Ok(([(CONTENT_TYPE, content_type(part_type, &boundary))], body).into_response())
}

/// 406 before anything is read when the stored syntax has no decoder here (JPEG-LS and
/// JPEG 2000 need C libraries this build does not link).
fn check_decodable(location: &InstanceLocation) -> Result<(), ApiError> {
    let decodable = TransferSyntaxRegistry
        .get(&location.transfer_syntax)
        .is_some_and(|ts| ts.is_codec_free() || ts.can_decode_all());
    if decodable {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!(
                "instance {} is stored in {}, which this server cannot decode to render; retrieve it as stored instead",
                location.sop_uid, location.transfer_syntax
            ),
        ))
    }
}

/// Decodes frame `frame` (from 1), applies the modality and VOI transforms, fits the viewport
/// and encodes. CPU-bound: called on the blocking pool.
fn render(
    data_set: &[u8],
    location: &InstanceLocation,
    frame: u32,
    params: &RenderParams,
) -> Result<Vec<u8>, ApiError> {
    let unreadable =
        |what: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "unreadable", what);
    let ts = TransferSyntaxRegistry
        .get(&location.transfer_syntax)
        .ok_or_else(|| {
            unreadable(format!(
                "unknown transfer syntax {}",
                location.transfer_syntax
            ))
        })?;
    let object = InMemDicomObject::read_dataset_with_ts(data_set, ts)
        .map_err(|e| unreadable(format!("cannot read the stored object: {e}")))?;
    if object.get(tags::PIXEL_DATA).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!(
                "instance {} has no pixel data; only images are rendered",
                location.sop_uid
            ),
        ));
    }
    let frames = object
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    if frame > frames {
        return Err(not_found(format!(
            "frame {frame}: the instance has {frames} frame(s)"
        )));
    }
    let file = object
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(location.transfer_syntax.as_str())
                .media_storage_sop_class_uid(location.sop_class_uid.as_str())
                .media_storage_sop_instance_uid(location.sop_uid.as_str()),
        )
        .map_err(|e| unreadable(format!("cannot frame the stored object: {e}")))?;
    let decoded = file
        .decode_pixel_data_frame(frame - 1)
        .map_err(|e| unreadable(format!("cannot decode frame {frame}: {e}")))?;
    let options = ConvertOptions::new()
        .with_voi_lut(params.voi_lut())
        .force_8bit();
    let image = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|e| unreadable(format!("cannot render frame {frame}: {e}")))?;
    encode(params.fit(image), params.output)
}

fn encode(image: DynamicImage, output: Output) -> Result<Vec<u8>, ApiError> {
    let failed = |e: dicom_pixeldata::image::ImageError| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode the image: {e}"),
        )
    };
    // JPEG and 8-bit PNG take grey or RGB; force_8bit gave one of them, but an RGBA or 16-bit
    // result (palette colour with alpha, say) is narrowed rather than refused.
    let image = match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    };
    let (width, height, colour) = (image.width(), image.height(), image.color());
    let mut out = Vec::new();
    match output {
        Output::Jpeg { quality } => codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .write_image(image.as_bytes(), width, height, colour.into())
            .map_err(failed)?,
        Output::Png => codecs::png::PngEncoder::new(&mut out)
            .write_image(image.as_bytes(), width, height, colour.into())
            .map_err(failed)?,
    }
    Ok(out)
}

/// Scaling is done with a triangle filter: smooth enough for grey-scale images, and several
/// times cheaper than Lanczos on a 512×512 CT slice.
pub(super) const SCALING_FILTER: FilterType = FilterType::Triangle;
