//! C-STORE SCP: receive → persist → index → respond.
//!
//! The data set is written exactly as it arrived behind a preamble and a file meta group we
//! build (no re-encoding), made durable, then indexed through the group-commit queue. Only
//! after the index commit does the caller send success. Every failure maps to a DIMSE status
//! with an Error Comment; nothing here closes the association.

use crate::attributes::{instance_record, parse_header};
use crate::context::ScpContext;
use crate::dimse::{status, Command, Response};
use crate::syntaxes::is_storage_sop_class;
use archive_core::index::{now_millis, NewInstance};
use archive_core::model::StoreOutcome;
use archive_core::online::{relative_path_for, ObjectWriter, StoreError};
use dicom_object::meta::FileMetaTableBuilder;

/// Strata's DICOM implementation class UID (a UUID-derived 2.25 UID) and version name.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.301225174053336555257649484838812991108";
pub const IMPLEMENTATION_VERSION_NAME: &str = "STRATA_0_1";

/// One C-STORE whose data set is arriving.
pub struct IncomingObject {
    command: Command,
    transfer_syntax: String,
    calling_ae: String,
    /// `Err` once the object is known to fail: the rest of its data is read and dropped.
    writer: Result<ObjectWriter, (u16, String)>,
}

impl IncomingObject {
    pub async fn begin(
        context: &ScpContext,
        command: Command,
        abstract_syntax: &str,
        transfer_syntax: &str,
        calling_ae: &str,
    ) -> IncomingObject {
        let writer = Self::open_writer(
            context,
            &command,
            abstract_syntax,
            transfer_syntax,
            calling_ae,
        )
        .await;
        IncomingObject {
            command,
            transfer_syntax: transfer_syntax.to_string(),
            calling_ae: calling_ae.to_string(),
            writer,
        }
    }

    async fn open_writer(
        context: &ScpContext,
        command: &Command,
        abstract_syntax: &str,
        transfer_syntax: &str,
        calling_ae: &str,
    ) -> Result<ObjectWriter, (u16, String)> {
        let sop_class = &command.affected_sop_class_uid;
        if !is_storage_sop_class(sop_class) {
            return Err((
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("{sop_class} is not a storage SOP class"),
            ));
        }
        if sop_class != abstract_syntax.trim_end_matches('\0') {
            return Err((
                status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP class differs from the presentation context".into(),
            ));
        }
        if command.affected_sop_instance_uid.is_empty() {
            return Err((
                status::MISSING_OR_INCONSISTENT_UID,
                "no Affected SOP Instance UID".into(),
            ));
        }
        let mut writer = context.online.begin().map_err(store_failure)?;
        let header = part10_header(command, transfer_syntax, calling_ae)?;
        writer.write(&header).await.map_err(store_failure)?;
        Ok(writer)
    }

    /// Appends one Data PDV's bytes.
    pub async fn receive(&mut self, bytes: &[u8]) {
        if let Ok(writer) = &mut self.writer {
            if let Err(error) = writer.write(bytes).await {
                self.writer = Err(store_failure(error));
            }
        }
    }

    /// Called after the last Data PDV: makes the object durable, indexes it, and returns the
    /// response to send.
    pub async fn complete(self, context: &ScpContext) -> Response {
        let command = self.command.clone();
        let (code, comment) = match self.persist(context).await {
            Ok(()) => return Response::to(&command, status::SUCCESS),
            Err(failure) => failure,
        };
        // The comment can name patient IDs (a study under another patient): debug level only.
        tracing::info!(
            sop_instance_uid = %command.affected_sop_instance_uid,
            status = format_args!("{code:#06X}"),
            "C-STORE refused"
        );
        tracing::debug!(sop_instance_uid = %command.affected_sop_instance_uid, reason = %comment, "C-STORE refusal reason");
        Response::to(&command, code).with_comment(comment)
    }

    async fn persist(self, context: &ScpContext) -> Result<(), (u16, String)> {
        let mut writer = self.writer?;
        let object = {
            let source = writer.parse_source().await.map_err(store_failure)?;
            parse_header(source).map_err(|e| {
                (
                    status::CANNOT_UNDERSTAND,
                    format!("cannot parse data set: {e}"),
                )
            })?
        };
        let record = instance_record(&object, &self.transfer_syntax, &self.calling_ae);
        drop(object);
        check_uids(&self.command, &record)?;

        let rel_path = relative_path_for(
            chrono::Utc::now().date_naive(),
            &record.study.study_uid,
            &record.series.series_uid,
            &record.instance.sop_instance_uid,
        );
        let file = writer.finish(&rel_path).await.map_err(store_failure)?;
        let new = NewInstance {
            record,
            file: file.clone(),
            policy: context.duplicate_policy,
            received_at: now_millis(),
        };
        let sop_uid = new.record.instance.sop_instance_uid.clone();
        let study_uid = new.record.study.study_uid.clone();
        let outcome = match context.ingest.store(new).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, sop_instance_uid = %sop_uid, "indexing failed");
                context.online.remove_unreferenced(&file).await;
                return Err((
                    status::PROCESSING_FAILURE,
                    "index unavailable; retry later".into(),
                ));
            }
        };
        match outcome {
            StoreOutcome::Stored => {
                tracing::debug!(sop_instance_uid = %sop_uid, study_uid = %study_uid, size = file.size, "stored");
                Ok(())
            }
            StoreOutcome::DuplicateKept => {
                tracing::info!(sop_instance_uid = %sop_uid, "duplicate SOP instance: kept the stored copy, discarded the new one");
                context.online.remove_unreferenced(&file).await;
                Ok(())
            }
            StoreOutcome::Replaced { old_file } => {
                tracing::info!(sop_instance_uid = %sop_uid, "duplicate SOP instance: replaced the stored copy");
                context.online.remove_unreferenced(&old_file).await;
                Ok(())
            }
            StoreOutcome::DuplicateRejected => {
                context.online.remove_unreferenced(&file).await;
                Err((
                    status::DUPLICATE_SOP_INSTANCE,
                    format!("SOP Instance {sop_uid} is already stored"),
                ))
            }
            StoreOutcome::Conflict(conflict) => {
                context.online.remove_unreferenced(&file).await;
                tracing::warn!(kind = conflict.kind(), sop_instance_uid = %sop_uid, "instance conflicts with the stored hierarchy");
                Err((
                    status::CONFLICTS_WITH_STORED_HIERARCHY,
                    conflict.to_string(),
                ))
            }
        }
    }
}

/// The data set must carry the UIDs the index is keyed on, and agree with the command.
fn check_uids(
    command: &Command,
    record: &archive_core::model::InstanceRecord,
) -> Result<(), (u16, String)> {
    let missing = [
        ("Study Instance UID", record.study.study_uid.as_str()),
        ("Series Instance UID", record.series.series_uid.as_str()),
        (
            "SOP Instance UID",
            record.instance.sop_instance_uid.as_str(),
        ),
    ]
    .into_iter()
    .find(|(_, value)| value.is_empty());
    if let Some((name, _)) = missing {
        return Err((
            status::MISSING_OR_INCONSISTENT_UID,
            format!("data set has no {name}"),
        ));
    }
    if record.instance.sop_instance_uid != command.affected_sop_instance_uid {
        return Err((
            status::MISSING_OR_INCONSISTENT_UID,
            format!(
                "SOP Instance UID {} differs from the command's",
                record.instance.sop_instance_uid
            ),
        ));
    }
    if !record.instance.sop_class_uid.is_empty()
        && record.instance.sop_class_uid != command.affected_sop_class_uid
    {
        return Err((
            status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            format!(
                "SOP Class UID {} differs from the command's",
                record.instance.sop_class_uid
            ),
        ));
    }
    Ok(())
}

fn store_failure(error: StoreError) -> (u16, String) {
    if error.is_out_of_space() {
        tracing::warn!(%error, "ONLINE storage full");
        (status::OUT_OF_RESOURCES, "ONLINE storage is full".into())
    } else {
        tracing::error!(%error, "ONLINE storage error");
        (
            status::PROCESSING_FAILURE,
            "storage error; retry later".into(),
        )
    }
}

/// Preamble, `DICM`, and a file meta group describing the object as received.
fn part10_header(
    command: &Command,
    transfer_syntax: &str,
    calling_ae: &str,
) -> Result<Vec<u8>, (u16, String)> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(command.affected_sop_class_uid.as_str())
        .media_storage_sop_instance_uid(command.affected_sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(calling_ae.trim())
        .build()
        .map_err(|e| {
            (
                status::MISSING_OR_INCONSISTENT_UID,
                format!("cannot build file meta: {e}"),
            )
        })?;
    let mut header = vec![0u8; 128];
    header.extend_from_slice(b"DICM");
    meta.write(&mut header).map_err(|e| {
        (
            status::PROCESSING_FAILURE,
            format!("cannot encode file meta: {e}"),
        )
    })?;
    Ok(header)
}

/// Used by tests and tools: the offset where the received data set starts in a stored file.
pub use archive_core::retrieve::part10_data_set_offset as data_set_offset;
