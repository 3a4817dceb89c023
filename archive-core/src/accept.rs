//! The one accept path. Every object that enters the ONLINE store — a C-STORE, a STOW-RS part,
//! a study restored from NEARLINE — is spooled to `.incoming`, parsed up to Pixel Data,
//! checked, laid out, made durable (fsync, rename, directory fsync) and indexed here, and the
//! temporary or refused file is cleaned up here. Callers only map the typed result to their
//! protocol: a DIMSE status in dicom-scp, an HTTP answer in web-admin, a job error in
//! lifecycle.
//!
//! The order is the durability rule: the file is durable before its index row is written, and
//! the caller may acknowledge only after [`Acceptor::accept`] returned `Ok` (the row is then
//! committed). A refused or failed object leaves neither file nor row behind.

use crate::config::DuplicatePolicy;
use crate::dicom_header::{instance_record, parse_header};
use crate::index::{now_millis, Held, Index, InstanceLocation, NewInstance};
use crate::ingest::IngestQueue;
use crate::model::{InstanceRecord, IntegrityConflict, StoreOutcome, StoredFile};
use crate::online::{relative_path_for, ObjectWriter, OnlineStore, ParseSource, StoreError};

/// PS3.4 C-STORE statuses (Annex B.2.3), shared by DIMSE and STOW-RS's FailureReason.
/// Strata-specific codes use the "cannot understand" range Cxxx, which the standard leaves to
/// implementations.
pub mod status {
    /// Refused: out of resources (every ONLINE filesystem below its watermark, disk full).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (SOP Class UID differs from the command's).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Error: the data set cannot be parsed.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Error: a required UID is missing or contradicts the command (or the STOW-RS study).
    pub const MISSING_OR_INCONSISTENT_UID: u16 = 0xC001;
    /// Error: the instance contradicts the stored hierarchy (series in another study,
    /// study of another patient): dcm4chee's "forbidden coercion".
    pub const CONFLICTS_WITH_STORED_HIERARCHY: u16 = 0xC002;
    /// Failure: processing failure (database or filesystem error; the sender may retry).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Failure: duplicate SOP instance (duplicate policy `reject`).
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
}

/// Everything an accept needs; cheap to clone, built once by the binary.
#[derive(Clone)]
pub struct Acceptor {
    online: OnlineStore,
    index: Index,
    ingest: IngestQueue,
    duplicate_policy: DuplicatePolicy,
}

/// Parses the header (up to Pixel Data) and makes the index record and the WADO-RS metadata.
fn describe(
    source: ParseSource<'_>,
    negotiated: Option<String>,
    source_ae: &str,
) -> Result<(InstanceRecord, Option<Vec<u8>>), Refusal> {
    let object = parse_header(source).map_err(|e| Refusal::Unparseable(e.to_string()))?;
    let transfer_syntax = match negotiated {
        Some(negotiated) => negotiated,
        None => object
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
    };
    Ok(record_and_metadata(&object, &transfer_syntax, source_ae))
}

fn record_and_metadata(
    object: &dicom_object::DefaultDicomObject,
    transfer_syntax: &str,
    source_ae: &str,
) -> (InstanceRecord, Option<Vec<u8>>) {
    let metadata = match crate::metadata::encode(object, transfer_syntax) {
        Ok(metadata) => Some(metadata),
        Err(error) => {
            // The object is still stored and retrievable; only /metadata lacks it.
            tracing::warn!(%error, "cannot make the instance's WADO-RS metadata");
            None
        }
    };
    (
        instance_record(object, transfer_syntax, source_ae),
        metadata,
    )
}

/// The index record and WADO-RS metadata of an object Strata already stored (`rebuild-index`
/// reading an ONLINE file or a pack member's head): the transfer syntax and the sending AE
/// come from the file meta group Strata wrote in front of the data set.
pub fn describe_stored(
    source: ParseSource<'_>,
) -> Result<(InstanceRecord, Option<Vec<u8>>), String> {
    let object = parse_header(source).map_err(|e| e.to_string())?;
    let meta = object.meta();
    let transfer_syntax = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let source_ae = meta
        .source_application_entity_title
        .as_deref()
        .unwrap_or("")
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string();
    Ok(record_and_metadata(&object, &transfer_syntax, &source_ae))
}

/// An object being received into the spool of the filesystem chosen for it.
pub struct Spooled {
    writer: ObjectWriter,
    /// Tells the group-commit writer this object is on its way (see `ingest::GATHER`).
    arriving: Option<crate::ingest::Arriving>,
}

/// How an object arrived, and what it must agree with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Arrival<'a> {
    /// Transfer syntax of the data set as negotiated (C-STORE); `None` takes the one its file
    /// meta group names (STOW-RS parts are Part-10 files).
    pub transfer_syntax: Option<&'a str>,
    /// Recorded as the instance's source (calling AE title, or who stored it over HTTP).
    pub source: &'a str,
    /// The C-STORE command's Affected SOP Instance and Class UIDs.
    pub sop_instance_uid: Option<&'a str>,
    pub sop_class_uid: Option<&'a str>,
    /// `POST /studies/{study}`: every part must belong to that study.
    pub study_uid: Option<&'a str>,
}

/// The UIDs of an object, once its header could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Empty when not known (a restore: the index already has it).
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptedAs {
    /// New instance, durable and indexed.
    Stored,
    /// Already stored and `keep-first`: the new copy was discarded.
    DuplicateKept,
    /// Already stored and `replace`: the new copy took the old one's place.
    Replaced,
}

#[derive(Clone, Debug)]
pub struct Accepted {
    pub identity: Identity,
    pub outcome: AcceptedAs,
}

/// Why an object was not stored. Nothing of it remains (no file, no row).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("ONLINE storage is full")]
    OutOfSpace,
    #[error("storage error; retry later")]
    Storage,
    #[error("cannot parse data set: {0}")]
    Unparseable(String),
    #[error("data set has no {0}")]
    MissingUid(&'static str),
    #[error("SOP Instance UID {0} differs from the command's")]
    SopInstanceMismatch(String),
    #[error("SOP Class UID {0} differs from the command's")]
    SopClassMismatch(String),
    #[error("Study Instance UID {found} is not the study {expected} of the request")]
    StudyMismatch { expected: String, found: String },
    #[error("SOP Instance {0} is already stored")]
    Duplicate(String),
    /// The text can name patient IDs: keep it out of logs above debug level.
    #[error("{0}")]
    Conflict(IntegrityConflict),
    #[error("index unavailable; retry later")]
    IndexUnavailable,
    /// Restore only: the bytes differ from what the index recorded.
    #[error(
        "SOP Instance {sop_instance_uid}: bytes have SHA-256 {found}, the index records {expected}"
    )]
    ChecksumMismatch {
        sop_instance_uid: String,
        expected: String,
        found: String,
    },
}

impl Refusal {
    /// The PS3.4 status: the DIMSE status of a C-STORE, the FailureReason of a STOW-RS part.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::OutOfSpace => status::OUT_OF_RESOURCES,
            Refusal::Storage | Refusal::IndexUnavailable | Refusal::ChecksumMismatch { .. } => {
                status::PROCESSING_FAILURE
            }
            Refusal::Unparseable(_) => status::CANNOT_UNDERSTAND,
            Refusal::MissingUid(_)
            | Refusal::SopInstanceMismatch(_)
            | Refusal::StudyMismatch { .. } => status::MISSING_OR_INCONSISTENT_UID,
            Refusal::SopClassMismatch(_) => status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            Refusal::Duplicate(_) => status::DUPLICATE_SOP_INSTANCE,
            Refusal::Conflict(_) => status::CONFLICTS_WITH_STORED_HIERARCHY,
        }
    }

    /// Trying again later may succeed (storage or index trouble), as opposed to bad input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Refusal::OutOfSpace | Refusal::Storage | Refusal::IndexUnavailable
        )
    }

    /// A name for logs that never carries patient data.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::OutOfSpace => "out of space",
            Refusal::Storage => "storage error",
            Refusal::Unparseable(_) => "unparseable",
            Refusal::MissingUid(_) => "missing UID",
            Refusal::SopInstanceMismatch(_) => "SOP instance mismatch",
            Refusal::SopClassMismatch(_) => "SOP class mismatch",
            Refusal::StudyMismatch { .. } => "study mismatch",
            Refusal::Duplicate(_) => "duplicate",
            Refusal::Conflict(conflict) => conflict.kind(),
            Refusal::IndexUnavailable => "index unavailable",
            Refusal::ChecksumMismatch { .. } => "checksum mismatch",
        }
    }
}

/// A refusal and, when the header could be read, the object it concerns.
#[derive(Debug)]
pub struct Refused {
    pub identity: Option<Identity>,
    pub reason: Refusal,
}

impl From<Refusal> for Refused {
    fn from(reason: Refusal) -> Refused {
        Refused {
            identity: None,
            reason,
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Refusal {
        if error.is_out_of_space() {
            tracing::warn!(%error, "ONLINE storage full");
            Refusal::OutOfSpace
        } else {
            tracing::error!(%error, "ONLINE storage error");
            Refusal::Storage
        }
    }
}

impl Spooled {
    /// Appends a copy of received bytes (for callers whose buffer is reused).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        Ok(self.writer.write(bytes).await?)
    }

    /// Appends a received chunk without copying it.
    pub async fn write_bytes(&mut self, bytes: bytes::Bytes) -> Result<(), Refusal> {
        Ok(self.writer.write_bytes(bytes).await?)
    }

    pub fn size(&self) -> u64 {
        self.writer.size()
    }
}

impl Acceptor {
    pub fn new(
        online: OnlineStore,
        index: Index,
        ingest: IngestQueue,
        duplicate_policy: DuplicatePolicy,
    ) -> Acceptor {
        Acceptor {
            online,
            index,
            ingest,
            duplicate_policy,
        }
    }

    pub fn online(&self) -> &OnlineStore {
        &self.online
    }

    /// Starts spooling one object on the filesystem new objects go to. Dropping the result
    /// before `accept` removes what was spooled.
    pub fn begin(&self) -> Result<Spooled, Refusal> {
        Ok(Spooled {
            writer: self.online.begin()?,
            arriving: Some(self.ingest.arriving()),
        })
    }

    /// Parses, checks, lays out, makes durable and indexes a completely received object.
    /// `Ok` means the object and its index row are durable (or the duplicate policy kept the
    /// stored copy): only then may the sender be told so.
    pub async fn accept(
        &self,
        spooled: Spooled,
        arrival: Arrival<'_>,
    ) -> Result<Accepted, Refused> {
        let mut writer = spooled.writer;
        let mut arriving = spooled.arriving;
        let negotiated = arrival.transfer_syntax.map(str::to_string);
        let (record, metadata) = match writer.parse_source().await.map_err(Refusal::from)? {
            // Small objects (most of a CT series) are parsed in place: a hand-off to the
            // blocking pool would cost more than the parse.
            source @ (ParseSource::Memory(_) | ParseSource::Chunks(_)) => {
                describe(source, negotiated, arrival.source)?
            }
            // A large object's header is read from its spool file: blocking I/O, off the
            // async threads.
            ParseSource::File(path) => {
                let path = path.to_path_buf();
                let source_ae = arrival.source.to_string();
                tokio::task::spawn_blocking(move || {
                    describe(ParseSource::File(&path), negotiated, &source_ae)
                })
                .await
                .map_err(|e| Refusal::Unparseable(format!("the header parse stopped: {e}")))??
            }
        };
        let identity = identity_of(&record);
        let refused = |reason: Refusal| Refused {
            identity: Some(identity.clone()),
            reason,
        };
        check(&record, &arrival).map_err(refused)?;

        let rel_path = relative_path_for(
            chrono::Utc::now().date_naive(),
            &record.study.study_uid,
            &record.series.series_uid,
            &record.instance.sop_instance_uid,
        );
        let file = writer
            .finish(&rel_path)
            .await
            .map_err(|e| refused(e.into()))?;
        let new = NewInstance {
            record,
            held: Held::Online(file.clone()),
            policy: self.duplicate_policy,
            received_at: now_millis(),
            metadata,
        };
        arriving.take(); // queued next: the writer sees it in the queue now
        let outcome = match self.ingest.store(new).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, sop_instance_uid = %identity.sop_instance_uid, "indexing failed");
                self.online.remove_unreferenced(&file).await;
                return Err(refused(Refusal::IndexUnavailable));
            }
        };
        let sop_uid = &identity.sop_instance_uid;
        let outcome = match outcome {
            StoreOutcome::Stored => {
                tracing::debug!(sop_instance_uid = %sop_uid, study_uid = %identity.study_uid, size = file.size, "stored");
                AcceptedAs::Stored
            }
            StoreOutcome::DuplicateKept => {
                tracing::info!(sop_instance_uid = %sop_uid, "duplicate SOP instance: kept the stored copy, discarded the new one");
                self.online.remove_unreferenced(&file).await;
                AcceptedAs::DuplicateKept
            }
            StoreOutcome::Replaced { old_file } => {
                tracing::info!(sop_instance_uid = %sop_uid, "duplicate SOP instance: replaced the stored copy");
                self.online.remove_unreferenced(&old_file).await;
                AcceptedAs::Replaced
            }
            StoreOutcome::DuplicateRejected => {
                self.online.remove_unreferenced(&file).await;
                return Err(refused(Refusal::Duplicate(sop_uid.clone())));
            }
            StoreOutcome::Conflict(conflict) => {
                self.online.remove_unreferenced(&file).await;
                tracing::warn!(kind = conflict.kind(), sop_instance_uid = %sop_uid, "instance conflicts with the stored hierarchy");
                return Err(refused(Refusal::Conflict(conflict)));
            }
        };
        Ok(Accepted { identity, outcome })
    }

    /// Brings back an ONLINE copy of an instance the index already knows (restore from
    /// NEARLINE): the bytes must be the ones recorded (SHA-256), then the file is made durable
    /// and recorded as the instance's ONLINE file (or removed again, should the instance have
    /// got one since: a copy received under `fill-missing`).
    pub async fn restore(
        &self,
        spooled: Spooled,
        location: &InstanceLocation,
    ) -> Result<StoredFile, Refused> {
        let identity = Identity {
            patient_id: String::new(),
            study_uid: location.study_uid.clone(),
            series_uid: location.series_uid.clone(),
            sop_instance_uid: location.sop_uid.clone(),
            sop_class_uid: location.sop_class_uid.clone(),
        };
        let refused = |reason: Refusal| Refused {
            identity: Some(identity.clone()),
            reason,
        };
        let rel_path = relative_path_for(
            chrono::Utc::now().date_naive(),
            &location.study_uid,
            &location.series_uid,
            &location.sop_uid,
        );
        let file = spooled
            .writer
            .finish(&rel_path)
            .await
            .map_err(|e| refused(e.into()))?;
        if file.sha256 != location.sha256 {
            self.online.remove_unreferenced(&file).await;
            return Err(refused(Refusal::ChecksumMismatch {
                sop_instance_uid: location.sop_uid.clone(),
                expected: location.sha256.clone(),
                found: file.sha256,
            }));
        }
        match self
            .index
            .add_online_file(&location.sop_uid, &file, now_millis())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // A copy received meanwhile (fill-missing) is already its ONLINE file.
                tracing::debug!(sop_instance_uid = %location.sop_uid, "instance got an ONLINE file during the restore; the restored copy was discarded");
                self.online.remove_unreferenced(&file).await;
            }
            Err(error) => {
                tracing::error!(%error, sop_instance_uid = %location.sop_uid, "cannot record the restored file");
                self.online.remove_unreferenced(&file).await;
                return Err(refused(Refusal::IndexUnavailable));
            }
        }
        Ok(file)
    }
}

fn identity_of(record: &InstanceRecord) -> Identity {
    Identity {
        patient_id: record.patient.patient_id.clone(),
        study_uid: record.study.study_uid.clone(),
        series_uid: record.series.series_uid.clone(),
        sop_instance_uid: record.instance.sop_instance_uid.clone(),
        sop_class_uid: record.instance.sop_class_uid.clone(),
    }
}

/// The data set must carry the UIDs the index is keyed on, and agree with how it arrived.
fn check(record: &InstanceRecord, arrival: &Arrival<'_>) -> Result<(), Refusal> {
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
        return Err(Refusal::MissingUid(name));
    }
    if let Some(expected) = arrival.sop_instance_uid {
        if record.instance.sop_instance_uid != expected {
            return Err(Refusal::SopInstanceMismatch(
                record.instance.sop_instance_uid.clone(),
            ));
        }
    }
    if let Some(expected) = arrival.sop_class_uid {
        if !record.instance.sop_class_uid.is_empty() && record.instance.sop_class_uid != expected {
            return Err(Refusal::SopClassMismatch(
                record.instance.sop_class_uid.clone(),
            ));
        }
    }
    if let Some(expected) = arrival.study_uid {
        if record.study.study_uid != expected {
            return Err(Refusal::StudyMismatch {
                expected: expected.to_string(),
                found: record.study.study_uid.clone(),
            });
        }
    }
    Ok(())
}
