//! The query parameters of rendered resources (PS3.18 §8.3.5.1): `accept`, `quality`,
//! `viewport` and `window`, checked before anything is read so a bad one is a 400 naming it.
//! `annotation` and `iccprofile` are accepted and not applied (no burnt-in text, no colour
//! management): the standard lets an origin server ignore them.

use super::accept::ranges;
use super::bad_request;
use super::rendered::SCALING_FILTER;
use crate::api::ApiError;
use axum::http::{HeaderMap, StatusCode};
use dicom_pixeldata::image::DynamicImage;
use dicom_pixeldata::{VoiLutFunction, VoiLutOption, WindowLevel};
use std::collections::HashMap;

/// JPEG quality when the request names none: visually lossless for grey-scale images.
const DEFAULT_QUALITY: u8 = 90;
/// Largest viewport side served: bounds the memory one request can make the server allocate.
const MAX_SIDE: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Jpeg { quality: u8 },
    Png,
}

impl Output {
    pub fn media_type(self) -> &'static str {
        match self {
            Output::Jpeg { .. } => "image/jpeg",
            Output::Png => "image/png",
        }
    }
}

/// Which part of the frame is shown, and in how many pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    /// Source region (x, y, width, height) in frame pixels; the whole frame when absent.
    pub region: Option<(u32, u32, u32, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RenderParams {
    pub output: Output,
    pub viewport: Option<Viewport>,
    pub window: Option<(WindowLevel, VoiLutFunction)>,
}

impl RenderParams {
    /// `thumbnail_side`: a thumbnail request, fitted to that square when no viewport is named.
    pub fn parse(
        headers: &HeaderMap,
        query: &HashMap<String, String>,
        thumbnail_side: Option<u32>,
    ) -> Result<RenderParams, ApiError> {
        let quality = match query.get("quality") {
            None => DEFAULT_QUALITY,
            Some(text) => text
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| {
                    bad_request(format!(
                        "query parameter `quality`: `{text}` is not a number from 1 to 100"
                    ))
                })?,
        };
        let output = choose_output(headers, query.get("accept"), quality)?;
        let viewport = match query.get("viewport") {
            Some(text) => Some(parse_viewport(text)?),
            None => thumbnail_side.map(|side| Viewport {
                width: side,
                height: side,
                region: None,
            }),
        };
        let window = query.get("window").map(|t| parse_window(t)).transpose()?;
        Ok(RenderParams {
            output,
            viewport,
            window,
        })
    }

    /// WADO-URI's own names (PS3.18 §9.1.2): `rows`, `columns`, `windowCenter`/`windowWidth`,
    /// `imageQuality`; `media_type` is the `contentType` chosen.
    pub fn for_wado_uri(
        query: &HashMap<String, String>,
        media_type: &str,
    ) -> Result<RenderParams, ApiError> {
        let number = |name: &str| -> Result<Option<f64>, ApiError> {
            query
                .get(name)
                .map(|text| {
                    text.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            bad_request(format!(
                                "query parameter `{name}`: `{text}` is not a number"
                            ))
                        })
                })
                .transpose()
        };
        let quality = match number("imageQuality")? {
            None => DEFAULT_QUALITY,
            Some(q) if (1.0..=100.0).contains(&q) => q as u8,
            Some(_) => {
                return Err(bad_request(
                    "query parameter `imageQuality`: must be from 1 to 100",
                ))
            }
        };
        let output = if media_type == "image/png" {
            Output::Png
        } else {
            Output::Jpeg { quality }
        };
        let side = |name: &str| -> Result<Option<u32>, ApiError> {
            match number(name)? {
                None => Ok(None),
                Some(v) if v >= 1.0 && v <= f64::from(MAX_SIDE) => Ok(Some(v as u32)),
                Some(_) => Err(bad_request(format!(
                    "query parameter `{name}`: must be from 1 to {MAX_SIDE}"
                ))),
            }
        };
        let viewport = match (side("columns")?, side("rows")?) {
            (None, None) => None,
            (columns, rows) => Some(Viewport {
                width: columns.unwrap_or(MAX_SIDE),
                height: rows.unwrap_or(MAX_SIDE),
                region: None,
            }),
        };
        let window = match (number("windowCenter")?, number("windowWidth")?) {
            (None, None) => None,
            (Some(center), Some(width)) if width > 0.0 => Some((WindowLevel { width, center }, VoiLutFunction::Linear)),
            _ => return Err(bad_request("query parameters `windowCenter` and `windowWidth`: both are needed, the width above 0")),
        };
        Ok(RenderParams {
            output,
            viewport,
            window,
        })
    }

    pub fn voi_lut(&self) -> VoiLutOption {
        match &self.window {
            Some((level, function)) => VoiLutOption::CustomWithFunction(*level, *function),
            None => VoiLutOption::Default,
        }
    }

    /// Crops to the viewport's region, then scales to fit its size, keeping the aspect ratio
    /// (PS3.18 §8.3.5.1.3).
    pub fn fit(&self, image: DynamicImage) -> DynamicImage {
        let Some(viewport) = self.viewport else {
            return image;
        };
        let image = match viewport.region {
            Some((x, y, width, height)) => {
                let x = x.min(image.width().saturating_sub(1));
                let y = y.min(image.height().saturating_sub(1));
                image.crop_imm(
                    x,
                    y,
                    width.min(image.width() - x).max(1),
                    height.min(image.height() - y).max(1),
                )
            }
            None => image,
        };
        if image.width() == viewport.width && image.height() <= viewport.height
            || image.height() == viewport.height && image.width() <= viewport.width
        {
            return image;
        }
        image.resize(viewport.width, viewport.height, SCALING_FILTER)
    }
}

/// The `accept` query parameter wins over the header (PS3.18 §8.3.3.1). `image/*` and `*/*`
/// get JPEG, what every browser shows.
fn choose_output(
    headers: &HeaderMap,
    accept_param: Option<&String>,
    quality: u8,
) -> Result<Output, ApiError> {
    let asked: Vec<String> = match accept_param {
        Some(list) => list
            .split(',')
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .collect(),
        None => ranges(headers).into_iter().map(|r| r.media_type).collect(),
    };
    for media_type in &asked {
        match media_type.as_str() {
            "image/jpeg" | "image/*" | "*/*" => return Ok(Output::Jpeg { quality }),
            "image/png" => return Ok(Output::Png),
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!(
            "rendered images are served as image/jpeg or image/png, not {}",
            asked.join(", ")
        ),
    ))
}

fn parse_viewport(text: &str) -> Result<Viewport, ApiError> {
    let invalid = |why: &str| bad_request(format!("query parameter `viewport`: `{text}` {why}"));
    let numbers: Vec<&str> = text.split(',').map(str::trim).collect();
    if numbers.len() != 2 && numbers.len() != 6 {
        return Err(invalid("must be vw,vh or vw,vh,sx,sy,sw,sh"));
    }
    let side = |n: &str| {
        n.parse::<u32>()
            .ok()
            .filter(|v| (1..=MAX_SIDE).contains(v))
            .ok_or_else(|| invalid(&format!("needs viewport sides from 1 to {MAX_SIDE}")))
    };
    let (width, height) = (side(numbers[0])?, side(numbers[1])?);
    let region = if numbers.len() == 6 {
        // Negative sizes (flips) are part of the standard but not served: say so.
        let value = |n: &str| {
            n.parse::<u32>().map_err(|_| {
                invalid("needs a source region of whole numbers from 0 (flipping is not supported)")
            })
        };
        let region = (
            value(numbers[2])?,
            value(numbers[3])?,
            value(numbers[4])?,
            value(numbers[5])?,
        );
        if region.2 == 0 || region.3 == 0 {
            return Err(invalid(
                "needs a source region at least one pixel wide and high",
            ));
        }
        Some(region)
    } else {
        None
    };
    Ok(Viewport {
        width,
        height,
        region,
    })
}

fn parse_window(text: &str) -> Result<(WindowLevel, VoiLutFunction), ApiError> {
    let invalid = || {
        bad_request(format!(
            "query parameter `window`: `{text}` must be center,width[,linear|linear-exact|sigmoid] with a width above 0"
        ))
    };
    let pieces: Vec<&str> = text.split(',').map(str::trim).collect();
    if pieces.len() != 2 && pieces.len() != 3 {
        return Err(invalid());
    }
    let center = pieces[0].parse::<f64>().ok().filter(|v| v.is_finite());
    let width = pieces[1]
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0);
    let (Some(center), Some(width)) = (center, width) else {
        return Err(invalid());
    };
    let function = match pieces.get(2).map(|f| f.to_ascii_lowercase()).as_deref() {
        None | Some("linear") => VoiLutFunction::Linear,
        Some("linear-exact") | Some("linear_exact") => VoiLutFunction::LinearExact,
        Some("sigmoid") => VoiLutFunction::Sigmoid,
        Some(_) => return Err(invalid()),
    };
    Ok((WindowLevel { width, center }, function))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::ACCEPT;
    use axum::http::HeaderValue;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn media_type_from_header_or_parameter() {
        let png = RenderParams::parse(&accept("image/png"), &query(&[]), None).expect("png");
        assert_eq!(png.output, Output::Png);
        let any = RenderParams::parse(&HeaderMap::new(), &query(&[]), None).expect("any");
        assert_eq!(any.output, Output::Jpeg { quality: 90 });
        let overridden = RenderParams::parse(
            &accept("image/png"),
            &query(&[("accept", "image/jpeg"), ("quality", "40")]),
            None,
        )
        .expect("jpeg");
        assert_eq!(overridden.output, Output::Jpeg { quality: 40 });
        let gif = RenderParams::parse(&accept("image/gif"), &query(&[]), None);
        assert_eq!(gif.expect_err("gif").status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (name, value) in [
            ("quality", "0"),
            ("quality", "high"),
            ("viewport", "10"),
            ("viewport", "0,10"),
            ("viewport", "99999,10"),
            ("viewport", "10,10,-1,0,5,5"),
            ("window", "40"),
            ("window", "40,0"),
            ("window", "40,400,cubic"),
        ] {
            let error = RenderParams::parse(&HeaderMap::new(), &query(&[(name, value)]), None)
                .expect_err(value);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert!(error.message().contains(name), "{}", error.message());
        }
    }

    #[test]
    fn thumbnails_fit_a_square_unless_told_otherwise() {
        let thumb = RenderParams::parse(&HeaderMap::new(), &query(&[]), Some(128)).expect("ok");
        let image = DynamicImage::new_luma8(512, 256);
        let fitted = thumb.fit(image.clone());
        assert_eq!((fitted.width(), fitted.height()), (128, 64));
        let with = |name, value| {
            RenderParams::parse(&HeaderMap::new(), &query(&[(name, value)]), None).expect("ok")
        };
        let fitted = with("viewport", "64,64,0,0,256,256").fit(image);
        assert_eq!((fitted.width(), fitted.height()), (64, 64));
        let window = with("window", "40,400,sigmoid");
        assert_eq!(
            window.voi_lut(),
            VoiLutOption::CustomWithFunction(
                WindowLevel {
                    width: 400.0,
                    center: 40.0
                },
                VoiLutFunction::Sigmoid
            )
        );
    }
}
