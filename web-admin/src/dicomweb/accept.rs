//! Reading the `Accept` header of DICOMweb requests (PS3.18 §8.7): which media type, and for
//! DICOM parts which transfer syntax. Both quoted and unquoted parameters are taken (OHIF
//! sends either, depending on its configuration).

use crate::api::ApiError;
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};

/// Explicit VR Little Endian: PS3.18's default for `application/dicom` parts.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// One media range of the header, lower-cased type, unquoted parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    pub media_type: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The ranges in the order given; an absent header is `*/*`.
pub fn ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let text: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let mut out = Vec::new();
    for range in text.join(",").split(',') {
        let mut pieces = range.split(';');
        let media_type = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        if media_type.is_empty() {
            continue;
        }
        let params = pieces
            .filter_map(|piece| {
                let (key, value) = piece.split_once('=')?;
                Some((
                    key.trim().to_ascii_lowercase(),
                    value.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        out.push(MediaRange { media_type, params });
    }
    if out.is_empty() {
        out.push(MediaRange {
            media_type: "*/*".into(),
            params: Vec::new(),
        });
    }
    out
}

fn not_acceptable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_ACCEPTABLE, "not_acceptable", message)
}

/// Searches and metadata answer DICOM JSON only.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let fits = ranges(headers).iter().any(|range| {
        matches!(
            range.media_type.as_str(),
            "*/*" | "application/*" | "application/json" | "application/dicom+json"
        )
    });
    if fits {
        Ok(())
    } else {
        Err(not_acceptable(
            "this resource is available as application/dicom+json only",
        ))
    }
}

/// The transfer syntax the client wants DICOM parts in; `None` means as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted(pub Option<String>);

/// For retrievals of whole objects: `multipart/related; type="application/dicom"` with an
/// optional `transfer-syntax` (absent means Explicit VR Little Endian, `*` as stored). A bare
/// `*/*` (or no header) takes the objects as stored.
pub fn wanted_for_objects(headers: &HeaderMap) -> Result<Wanted, ApiError> {
    for range in ranges(headers) {
        match range.media_type.as_str() {
            "*/*" | "multipart/*" => return Ok(Wanted(None)),
            "multipart/related" | "application/dicom" => {
                let part = if range.media_type == "application/dicom" {
                    "application/dicom"
                } else {
                    range.param("type").unwrap_or("application/dicom")
                };
                if part != "application/dicom" {
                    continue;
                }
                return Ok(Wanted(match range.param("transfer-syntax") {
                    Some("*") => None,
                    Some(uid) => Some(uid.to_string()),
                    None => Some(EXPLICIT_LE.to_string()),
                }));
            }
            _ => continue,
        }
    }
    Err(not_acceptable(
        "objects are served as multipart/related; type=\"application/dicom\"",
    ))
}

/// For frames and bulk data: whether uncompressed data (`application/octet-stream`) and
/// compressed data as stored (`transfer-syntax=*`, or the stored syntax's own media type) are
/// acceptable.
pub struct FrameWish {
    pub uncompressed: bool,
    pub as_stored: bool,
    pub media_types: Vec<String>,
}

pub fn wanted_for_frames(headers: &HeaderMap) -> FrameWish {
    let mut wish = FrameWish {
        uncompressed: false,
        as_stored: false,
        media_types: Vec::new(),
    };
    for range in ranges(headers) {
        let part = if range.media_type == "multipart/related" {
            range
                .param("type")
                .unwrap_or("application/octet-stream")
                .to_ascii_lowercase()
        } else {
            range.media_type.clone()
        };
        match part.as_str() {
            "*/*" | "multipart/*" => {
                wish.uncompressed = true;
                wish.as_stored = true;
            }
            "application/octet-stream" => {
                wish.uncompressed = true;
                if range.param("transfer-syntax") == Some("*") {
                    wish.as_stored = true;
                }
            }
            other => {
                if range.param("transfer-syntax") == Some("*") {
                    wish.as_stored = true;
                }
                wish.media_types.push(other.to_string());
            }
        }
    }
    wish
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(accept: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(accept).expect("header"));
        headers
    }

    #[test]
    fn object_syntaxes_quoted_or_not() {
        assert_eq!(
            wanted_for_objects(&headers(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*"
            ))
            .expect("ok"),
            Wanted(None)
        );
        assert_eq!(
            wanted_for_objects(&headers("multipart/related; type=application/dicom")).expect("ok"),
            Wanted(Some(EXPLICIT_LE.into()))
        );
        assert_eq!(
            wanted_for_objects(&HeaderMap::new()).expect("ok"),
            Wanted(None)
        );
        assert!(wanted_for_objects(&headers("image/jpeg")).is_err());
        assert!(require_json(&headers("application/dicom+xml")).is_err());
        assert!(require_json(&headers("application/dicom+json, */*")).is_ok());
    }

    #[test]
    fn frames_as_ohif_asks() {
        let wish = wanted_for_frames(&headers(
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
        ));
        assert!(wish.uncompressed && wish.as_stored);
        let wish = wanted_for_frames(&headers("multipart/related; type=\"image/jls\""));
        assert!(!wish.uncompressed && !wish.as_stored);
        assert_eq!(wish.media_types, vec!["image/jls".to_string()]);
    }
}
