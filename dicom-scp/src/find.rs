//! C-FIND SCP (Patient Root and Study Root): identifier → index query → one pending response
//! per match with exactly the requested keys → final status. Answered from the index alone.

use crate::dimse::{status, text_element, Command, Response};
use crate::identifier::Identifier;
use crate::messaging::{
    check_for_cancel, send_final, send_message, Association, DicomStream, Interruption,
};
use archive_core::query::{attribute_of, FindQuery, FindRow, Matcher, Model, QueryKey};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Information model of a C-FIND abstract syntax, if it is one we serve.
pub fn model_of(abstract_syntax: &str) -> Option<Model> {
    match abstract_syntax {
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND => Some(Model::PatientRoot),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND => Some(Model::StudyRoot),
        _ => None,
    }
}

/// A key of the identifier as the SCU sent it: answered in the same tag and VR.
struct RequestedKey {
    tag: Tag,
    vr: VR,
    attr: Option<archive_core::query::Attr>,
}

/// The parsed identifier: the index query, and what each answer must contain.
struct Request {
    query: FindQuery,
    keys: Vec<RequestedKey>,
}

pub struct FindContext<'a> {
    pub index: &'a archive_core::index::Index,
    pub ae_title: &'a str,
    pub max_results: usize,
}

/// Runs one C-FIND; returns false when the association must end (peer gone).
#[allow(clippy::too_many_arguments)]
pub async fn serve_find<S: DicomStream>(
    association: &mut Association<S>,
    context: &FindContext<'_>,
    command: &Command,
    pc_id: u8,
    model: Model,
    transfer_syntax: &str,
    identifier: &[u8],
    final_status: &mut Option<u16>,
) -> bool {
    let request = match parse_request(identifier, transfer_syntax, model, context.max_results) {
        Ok(request) => request,
        Err((code, comment)) => {
            tracing::info!(%comment, "C-FIND refused");
            let response = Response::to(command, code).with_comment(comment);
            return send_final(association, pc_id, &response, None, final_status).await;
        }
    };
    tracing::debug!(
        level = request.query.level.as_str(),
        keys = request.keys.len(),
        "C-FIND"
    );
    let rows = match context.index.find(&request.query).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::error!(%error, "C-FIND: index query failed");
            let response =
                Response::to(command, status::OUT_OF_RESOURCES).with_comment("index unavailable");
            return send_final(association, pc_id, &response, None, final_status).await;
        }
    };
    let limited = rows.len() > context.max_results;
    for row in rows.iter().take(context.max_results) {
        match check_for_cancel(association, command.message_id).await {
            Interruption::Nothing => {}
            Interruption::Cancelled => {
                let response = Response::to(command, status::CANCEL);
                return send_final(association, pc_id, &response, None, final_status).await;
            }
            Interruption::Gone => return false,
        }
        let data_set = match encode_answer(row, &request, context.ae_title, transfer_syntax) {
            Ok(data_set) => data_set,
            Err(error) => {
                tracing::error!(%error, "C-FIND: cannot encode an answer");
                let response = Response::to(command, 0xC001).with_comment("cannot encode answer");
                return send_final(association, pc_id, &response, None, final_status).await;
            }
        };
        let pending = Response::to(command, status::PENDING).with_data_set();
        if send_message(association, pc_id, &pending, Some(&data_set))
            .await
            .is_err()
        {
            return false;
        }
    }
    tracing::debug!(
        matches = rows.len().min(context.max_results),
        "C-FIND answered"
    );
    let last = if limited {
        let comment = format!(
            "more than {} matches; only the first {} were sent: narrow the query",
            context.max_results, context.max_results
        );
        tracing::info!(max = context.max_results, "C-FIND answer limited");
        Response::to(command, status::OUT_OF_RESOURCES).with_comment(comment)
    } else {
        Response::to(command, status::SUCCESS)
    };
    send_final(association, pc_id, &last, None, final_status).await
}

fn parse_request(
    identifier: &[u8],
    transfer_syntax: &str,
    model: Model,
    max_results: usize,
) -> Result<Request, (u16, String)> {
    let Identifier { object, level } = Identifier::read(identifier, transfer_syntax, model)?;
    let mut keys = Vec::new();
    let mut query_keys = Vec::new();
    for element in object.iter() {
        let tag = element.header().tag;
        if tag == tags::QUERY_RETRIEVE_LEVEL
            || tag == tags::SPECIFIC_CHARACTER_SET
            || tag.group() == 0x0002
        {
            continue;
        }
        let vr = element.header().vr;
        let attr = attribute_of(tag).map(|(attr, _)| attr);
        if let Some(attr) = attr {
            let value = if vr == VR::SQ {
                String::new()
            } else {
                element.to_str().map(|v| v.into_owned()).unwrap_or_default()
            };
            let matcher = Matcher::parse(&value, attr.kind())
                .map_err(|e| (status::CANNOT_UNDERSTAND, format!("{tag}: {e}")))?;
            query_keys.push(QueryKey { attr, matcher });
        }
        keys.push(RequestedKey { tag, vr, attr });
    }
    let query = FindQuery {
        level,
        keys: query_keys,
        limit: max_results,
        offset: None,
    };
    query
        .validate(model)
        .map_err(|e| (status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, e.to_string()))?;
    Ok(Request { query, keys })
}

fn encode_answer(
    row: &FindRow,
    request: &Request,
    ae_title: &str,
    transfer_syntax: &str,
) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or("unknown transfer syntax")?;
    let mut answer = InMemDicomObject::new_empty();
    // The index holds text decoded to UTF-8.
    answer.put(text_element(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        "ISO_IR 192",
    ));
    answer.put(text_element(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        request.query.level.as_str(),
    ));
    answer.put(text_element(tags::RETRIEVE_AE_TITLE, VR::AE, ae_title));
    for key in &request.keys {
        if key.vr == VR::SQ {
            answer.put(DataElement::new(
                key.tag,
                VR::SQ,
                dicom_core::value::DataSetSequence::<InMemDicomObject>::empty(),
            ));
            continue;
        }
        let value = key
            .attr
            .and_then(|attr| row.get(&attr))
            .map(String::as_str)
            .unwrap_or("");
        answer.put(text_element(key.tag, key.vr, value));
    }
    let mut bytes = Vec::new();
    answer
        .write_dataset_with_ts(&mut bytes, ts)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}
