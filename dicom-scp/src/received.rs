//! What one association stored, per study: reported to the audit trail when the association
//! ends, as one event per study (ATNA's "DICOM Instances Transferred"), not one per instance.

use crate::context::ScpContext;
use archive_core::accept::Identity;
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Default)]
struct Counts {
    patient_id: String,
    stored: u64,
    failed: u64,
}

#[derive(Default)]
pub(crate) struct ReceivedStudies {
    /// Study Instance UID (empty for objects refused before their study was known) → counts.
    studies: BTreeMap<String, Counts>,
}

impl ReceivedStudies {
    pub fn add(&mut self, identity: Option<&Identity>, stored: bool) {
        let study = identity.map_or("", |i| i.study_uid.as_str());
        // Runs once per C-STORE: allocate the key only for a study not seen yet.
        if !self.studies.contains_key(study) {
            self.studies.insert(study.to_string(), Counts::default());
        }
        let Some(counts) = self.studies.get_mut(study) else {
            return;
        };
        if let Some(identity) = identity {
            if counts.patient_id.is_empty() {
                counts.patient_id = identity.patient_id.clone();
            }
        }
        if stored {
            counts.stored += 1;
        } else {
            counts.failed += 1;
        }
    }

    pub async fn report(self, context: &ScpContext, calling_ae: &str, peer: SocketAddr) {
        for (study, counts) in self.studies {
            let event = NewAuditEvent::new(
                AuditAction::Store,
                AuditOutcome::of(counts.failed == 0),
                calling_ae,
            )
            .peer(peer.ip())
            .study(study)
            .patient(counts.patient_id)
            .detail(format!(
                "C-STORE: {} stored, {} refused",
                counts.stored, counts.failed
            ));
            context.auditor.record(event).await;
        }
    }
}
