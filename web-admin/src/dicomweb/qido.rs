//! QIDO-RS (PS3.18 §10.6): searches answered from the index with C-FIND's own query model and
//! matcher, so a key matches the same way whichever protocol asked.

use super::json::{attribute, key, row_object};
use super::{bad_request, Links};
use crate::api::ApiError;
use crate::WebState;
use archive_core::query::{
    attribute_of, tag_of, Attr, FindQuery, Level, Matcher, Model, QueryKey, ValueKind,
};
use axum::extract::{MatchedPath, Path, RawQuery, State};
use axum::http::header::{CONTENT_TYPE, WARNING};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use dicom_core::dictionary::DataDictionary;
use dicom_core::VR;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use serde_json::Value;
use std::collections::HashMap;

/// Most matches one search returns; more need `offset`.
pub const MAX_LIMIT: usize = 1000;

/// What PS3.18 Table 6.7.1-2 says a search returns at each level when not asked for more.
fn default_attributes(level: Level) -> &'static [Attr] {
    use Attr::*;
    match level {
        Level::Study => &[
            StudyDate,
            StudyTime,
            AccessionNumber,
            ModalitiesInStudy,
            ReferringPhysicianName,
            PatientName,
            PatientId,
            PatientBirthDate,
            PatientSex,
            StudyInstanceUid,
            StudyId,
            StudyDescription,
            NumberOfStudyRelatedSeries,
            NumberOfStudyRelatedInstances,
            InstanceAvailability,
        ],
        Level::Series => &[
            Modality,
            SeriesDescription,
            SeriesInstanceUid,
            SeriesNumber,
            BodyPartExamined,
            NumberOfSeriesRelatedInstances,
            InstanceAvailability,
        ],
        Level::Image | Level::Patient => &[
            SopClassUid,
            SopInstanceUid,
            InstanceNumber,
            NumberOfFrames,
            InstanceAvailability,
        ],
    }
}

/// Every attribute the index keeps at `level` and above (`includefield=all`); the patient
/// counts are left out, as QIDO-RS has no patient level to count at.
fn all_attributes(level: Level) -> Vec<Attr> {
    use Attr::*;
    Attr::ALL
        .iter()
        .copied()
        .filter(|attr| {
            attr.level() <= level
                && !matches!(
                    attr,
                    NumberOfPatientRelatedStudies
                        | NumberOfPatientRelatedSeries
                        | NumberOfPatientRelatedInstances
                )
        })
        .collect()
}

/// A parsed search: the index query, the attributes to answer with, and the page.
#[derive(Debug)]
pub struct Search {
    pub query: FindQuery,
    pub returned: Vec<Attr>,
    pub limit: usize,
    /// Parameters that were understood but not applied, for the `Warning` header.
    pub warnings: Vec<String>,
}

/// Reads the query string of a search at `level`; `fixed` are the UIDs of the path
/// (`/studies/{study}/series`). A bad parameter is a 400 naming it.
pub fn parse(level: Level, fixed: &[(Attr, &str)], raw: &str) -> Result<Search, ApiError> {
    let mut keys: Vec<QueryKey> = Vec::new();
    let mut returned: Vec<Attr> = default_attributes(level).to_vec();
    let mut limit = MAX_LIMIT;
    let mut offset = 0usize;
    let mut warnings = Vec::new();
    for (attr, uid) in fixed {
        keys.push(QueryKey {
            attr: *attr,
            matcher: Matcher::parse(uid, ValueKind::Uid)
                .map_err(|e| bad_request(format!("path UID `{uid}`: {e}")))?,
        });
    }
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        let (name, value) = (name.trim(), value.trim());
        match name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .map_err(|_| bad_parameter(name, "must be a whole number"))?
                    .min(MAX_LIMIT);
            }
            "offset" => {
                offset = value
                    .parse()
                    .map_err(|_| bad_parameter(name, "must be a whole number"))?;
            }
            "fuzzymatching" => match value {
                "false" => {}
                "true" => warnings.push("fuzzymatching is not supported; matching is exact".into()),
                _ => return Err(bad_parameter(name, "must be true or false")),
            },
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        returned.extend(all_attributes(level));
                    } else if let Some(attr) = indexed_attribute(field)? {
                        returned.push(attr);
                    }
                    // Other valid attributes are not kept by the index: silently not returned,
                    // as PS3.18 allows.
                }
            }
            _ => {
                let Some(attr) = indexed_attribute(name)? else {
                    return Err(bad_parameter(
                        name,
                        "this attribute cannot be matched: the index keeps only the C-FIND keys",
                    ));
                };
                if attr.kind() == ValueKind::Computed {
                    return Err(bad_parameter(name, "computed attributes cannot be matched"));
                }
                // QIDO separates UID lists with commas, C-FIND with backslashes.
                let value = if attr.kind() == ValueKind::Uid {
                    value.replace(',', "\\")
                } else {
                    value.to_string()
                };
                let matcher = Matcher::parse(&value, attr.kind())
                    .map_err(|e| bad_parameter(name, &e.to_string()))?;
                keys.push(QueryKey { attr, matcher });
                returned.push(attr);
            }
        }
    }
    for attr in &returned {
        if !keys.iter().any(|k| k.attr == *attr) && attr.level() <= level {
            keys.push(QueryKey {
                attr: *attr,
                matcher: Matcher::Universal,
            });
        }
    }
    returned.retain(|attr| attr.level() <= level);
    returned.sort();
    returned.dedup();
    let query = FindQuery {
        level,
        keys,
        limit,
        offset: Some(offset),
    };
    query
        .validate(Model::PatientRoot)
        .map_err(|e| bad_request(e.to_string()))?;
    Ok(Search {
        query,
        returned,
        limit,
        warnings,
    })
}

/// The index attribute named by a keyword (`PatientName`) or tag (`00100010`); `Ok(None)`
/// for a valid attribute the index does not keep; 400 for a name that is neither.
fn indexed_attribute(name: &str) -> Result<Option<Attr>, ApiError> {
    if name.contains('.') {
        return Err(bad_parameter(
            name,
            "attributes inside sequences cannot be matched",
        ));
    }
    let tag = StandardDataDictionary
        .parse_tag(name)
        .ok_or_else(|| bad_parameter(name, "not a DICOM keyword or tag"))?;
    Ok(attribute_of(tag).map(|(attr, _)| attr))
}

fn bad_parameter(name: &str, message: &str) -> ApiError {
    bad_request(format!("query parameter `{name}`: {message}"))
}

/// The answer for the index rows of a search: one object per match, with its RetrieveURL.
pub fn answer(search: &Search, rows: &[archive_core::query::FindRow], links: &Links) -> Value {
    let matches: Vec<Value> = rows
        .iter()
        .take(search.limit)
        .map(|row| {
            let mut object = row_object(row, &search.returned);
            let uid = |attr: Attr| row.get(&attr).map(String::as_str).unwrap_or("");
            let url = match search.query.level {
                Level::Study => links.study(uid(Attr::StudyInstanceUid)),
                Level::Series => {
                    links.series(uid(Attr::StudyInstanceUid), uid(Attr::SeriesInstanceUid))
                }
                _ => links.instance(
                    uid(Attr::StudyInstanceUid),
                    uid(Attr::SeriesInstanceUid),
                    uid(Attr::SopInstanceUid),
                ),
            };
            let retrieve_url = tags::RETRIEVE_URL;
            object.insert(
                key(retrieve_url.group(), retrieve_url.element()),
                attribute(VR::UR, &url),
            );
            // Study and series UIDs above the level, which the index returns as unique keys.
            for attr in [Attr::StudyInstanceUid, Attr::SeriesInstanceUid] {
                if attr.level() <= search.query.level {
                    let tag = tag_of(attr);
                    object
                        .entry(key(tag.group(), tag.element()))
                        .or_insert_with(|| attribute(VR::UI, uid(attr)));
                }
            }
            Value::Object(object)
        })
        .collect();
    Value::Array(matches)
}

/// Runs a search and answers it as `application/dicom+json`.
async fn search(
    state: &WebState,
    links: &Links,
    headers: &HeaderMap,
    level: Level,
    fixed: &[(Attr, &str)],
    raw: Option<String>,
) -> Result<Response, ApiError> {
    super::accept::require_json(headers)?;
    let search = parse(level, fixed, raw.as_deref().unwrap_or(""))?;
    let rows = state.index.find(&search.query).await?;
    let mut warnings = search.warnings.clone();
    if rows.len() > search.limit {
        warnings.push(format!(
            "there are more matches than the {} returned: ask again with offset",
            search.limit
        ));
    }
    let body = answer(&search, &rows, links);
    let mut response = ([(CONTENT_TYPE, super::DICOM_JSON)], body.to_string()).into_response();
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&format!("299 strata \"{warning}\"")) {
            response.headers_mut().append(WARNING, value);
        }
    }
    Ok(response)
}

/// Every QIDO-RS route: the level is the path's last segment (`studies`, `series`,
/// `instances`), and the UIDs in the path (`{study}`, `{series}`) are fixed keys of the search.
pub async fn search_route(
    State(state): State<WebState>,
    links: Links,
    headers: HeaderMap,
    matched: MatchedPath,
    uids: Option<Path<HashMap<String, String>>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let uids = uids.map(|Path(uids)| uids).unwrap_or_default();
    let level = match matched.as_str().rsplit('/').next() {
        Some("studies") => Level::Study,
        Some("series") => Level::Series,
        _ => Level::Image,
    };
    let fixed: Vec<(Attr, &str)> = [
        (Attr::StudyInstanceUid, "study"),
        (Attr::SeriesInstanceUid, "series"),
    ]
    .into_iter()
    .filter_map(|(attr, name)| uids.get(name).map(|uid| (attr, uid.as_str())))
    .collect();
    search(&state, &links, &headers, level, &fixed, raw).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_the_c_find_query() {
        let search = parse(
            Level::Study,
            &[],
            "PatientName=DOE*&00080020=20240101-20241231&limit=5&offset=10&includefield=00081030,StudyID",
        )
        .expect("parse");
        assert_eq!(search.limit, 5);
        assert_eq!(search.query.offset, Some(10));
        let name = search
            .query
            .keys
            .iter()
            .find(|k| k.attr == Attr::PatientName)
            .expect("name key");
        assert_ne!(name.matcher, Matcher::Universal);
        assert!(search.returned.contains(&Attr::StudyDescription));
        assert!(search.returned.contains(&Attr::StudyDate));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (raw, named) in [
            ("limit=ten", "limit"),
            ("NoSuchKeyword=1", "NoSuchKeyword"),
            ("StudyDate=2024-01-01", "StudyDate"),
            ("fuzzymatching=maybe", "fuzzymatching"),
            (
                "ReferencedSeriesSequence.SeriesInstanceUID=1",
                "ReferencedSeriesSequence",
            ),
        ] {
            let error = parse(Level::Study, &[], raw).expect_err(raw);
            assert!(
                error.message().contains(named),
                "{raw}: {}",
                error.message()
            );
        }
    }

    #[test]
    fn uid_lists_take_commas_and_series_level_keeps_study_keys() {
        let search = parse(
            Level::Series,
            &[(Attr::StudyInstanceUid, "1.2.3")],
            "SeriesInstanceUID=1.2.3.4,1.2.3.5&Modality=CT",
        )
        .expect("parse");
        let series = search
            .query
            .keys
            .iter()
            .find(|k| k.attr == Attr::SeriesInstanceUid)
            .expect("series key");
        assert!(matches!(series.matcher, Matcher::AnyOf(ref uids) if uids.len() == 2));
        assert!(search
            .query
            .keys
            .iter()
            .any(|k| k.attr == Attr::StudyInstanceUid && k.matcher != Matcher::Universal));
    }
}
