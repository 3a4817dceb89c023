//! dcm4chee 2.x HSM tars found on a target (`strata import --hsm-target NAME`, or
//! `rebuild-index` over a target that holds them), registered where they are: no upload.
//!
//! The target has already read every member by range and checked it against the tar's MD5SUM
//! entry; what failed is reported and left out. Each member left is indexed from its header
//! (one more range read) and recorded with its offset and SHA-256, so retrieval, verify-sync
//! and fixity treat the tar like one of Strata's packs. The tar counts as ARCHIVED at once:
//! every member it is recorded with was just read back whole and matched.

use super::nearline::{read_headers, MemberError};
use super::{RebuildError, RebuildReport, TargetToScan};
use archive_core::config::DuplicatePolicy;
use archive_core::index::{now_millis, FoundPack, Held, Index, NewInstance};
use archive_core::model::StoreOutcome;
use archive_core::nearline::{ListedPack, PackContents, PackStatus, PackedMember};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(super) async fn register_tar(
    index: &Index,
    to_scan: &TargetToScan,
    pack: &ListedPack,
    contents: PackContents,
    parallel: &Arc<Semaphore>,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let target = &to_scan.target;
    let where_ = format!("{}{}", target.location(), pack.key);
    for rejected in &contents.rejected {
        report
            .problems
            .push(format!("{where_}: {rejected}; not indexed"));
    }
    let heads = read_headers(target, &pack.key, &contents.members, parallel).await;
    let mut members: Vec<PackedMember> = Vec::with_capacity(heads.len());
    let mut batch: Vec<NewInstance> = Vec::with_capacity(heads.len());
    for (mut member, head) in contents.members.into_iter().zip(heads) {
        let (record, metadata) = match head {
            Ok(described) => described,
            Err(MemberError::Unreadable(problem)) => {
                // The target went away mid-tar: stop; a rerun continues with this tar.
                return Err(RebuildError::Io(format!("{where_}: {problem}")));
            }
            Err(MemberError::Invalid(problem)) => {
                report.problems.push(format!("{where_}: {problem}"));
                continue;
            }
        };
        if members
            .iter()
            .any(|m| m.sop_uid == record.instance.sop_instance_uid)
        {
            report.problems.push(format!(
                "{where_}: member `{}` holds SOP Instance {} again; only the first is indexed",
                member.member_path, record.instance.sop_instance_uid
            ));
            continue;
        }
        member.sop_uid = record.instance.sop_instance_uid.clone();
        member.series_uid = record.series.series_uid.clone();
        member.sop_class_uid = record.instance.sop_class_uid.clone();
        member.transfer_syntax = record.instance.transfer_syntax.clone();
        batch.push(NewInstance {
            record,
            held: Held::InPackOnly { size: member.size },
            policy: DuplicatePolicy::KeepFirst,
            received_at: member.received_at.unwrap_or(contents.created_at),
            metadata,
        });
        members.push(member);
    }
    let Some(study_uid) = batch.first().map(|b| b.record.study.study_uid.clone()) else {
        report.problems.push(format!(
            "{where_}: not recorded: none of its members could be indexed"
        ));
        return Ok(());
    };
    // dcm4chee 2.x wrote one series to a tar; a pack belongs to one study in the index.
    if batch.iter().any(|b| b.record.study.study_uid != study_uid) {
        report.problems.push(format!(
            "{where_}: not recorded: its members belong to more than one study"
        ));
        return Ok(());
    }
    let uids: Vec<&str> = members.iter().map(|m| m.sop_uid.as_str()).collect();
    let known = index.known_instances(&uids).await?;
    for member in &members {
        if let Some(online) = known
            .get(&member.sop_uid)
            .and_then(|k| k.online_sha256.as_ref())
        {
            if *online != member.sha256 {
                report.conflicts.push(format!(
                    "SOP Instance {}: the ONLINE file has SHA-256 {online}, member `{}` of \
                     {where_} has {}; both are kept",
                    member.sop_uid, member.member_path, member.sha256
                ));
            }
        }
    }
    batch.retain(|new| !known.contains_key(&new.record.instance.sop_instance_uid));
    batch.sort_by_key(|new| new.received_at);
    for chunk in batch.chunks(100) {
        for (new, outcome) in chunk.iter().zip(index.store_batch(chunk).await) {
            match outcome? {
                StoreOutcome::Stored => report.instances_from_packs += 1,
                StoreOutcome::Conflict(conflict) => report.problems.push(format!(
                    "{where_}: SOP Instance {} not indexed: {conflict}",
                    new.record.instance.sop_instance_uid
                )),
                _ => {}
            }
        }
        index.fold_counts_if_due().await;
    }
    let now = now_millis();
    let found = FoundPack {
        study_uid: &study_uid,
        target_id: to_scan.row.id,
        object_key: &pack.key,
        status: PackStatus::Archived,
        size: pack.size,
        sha256: "",
        error: "",
        created_at: contents.created_at,
        verified_at: Some(now),
        members: &members,
    };
    if index.record_found_pack(&found, now).await? {
        report.packs_recorded += 1;
        report.packs_archived += 1;
    } else {
        report.packs_already_recorded += 1;
    }
    Ok(())
}
