//! Rebuilding from a NEARLINE target: every pack the index does not know is recorded from its
//! manifest (read by range). Instances whose ONLINE copy is gone are indexed from their
//! member's header, read by range too.

use super::{Progress, RebuildError, RebuildOptions, RebuildReport, TargetToScan};
use archive_core::accept::describe_stored;
use archive_core::config::DuplicatePolicy;
use archive_core::index::{now_millis, FoundPack, Held, Index, NewInstance};
use archive_core::model::StoreOutcome;
use archive_core::nearline::{
    ExpectedPack, ListedPack, NearlineTarget, PackContents, PackFormat, PackMemberRow, PackStatus,
    PackedMember, TransferProgress, VerifyOutcome,
};
use archive_core::online::ParseSource;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The first read of a member: enough for the header of almost any object; a longer header
/// (large private sequences, an embedded icon) takes a second, whole read.
const HEAD_READ: u64 = 64 * 1024;
/// Members larger than this whose header does not fit the first read are not read whole.
const LARGEST_WHOLE_READ: u64 = 256 << 20;

pub(super) async fn scan(
    index: &Index,
    to_scan: &TargetToScan,
    options: &RebuildOptions,
    progress: &Progress,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let name = &to_scan.row.spec.name;
    let scope = scope(to_scan);
    let checkpoint = index.rebuild_checkpoint(&scope).await?;
    let listed = to_scan.target.list_packs().await?;
    let recorded = index.pack_keys(to_scan.row.id).await?;
    let todo: Vec<&ListedPack> = listed
        .iter()
        .filter(|pack| checkpoint.as_ref().is_none_or(|done| pack.key > *done))
        .collect();
    progress.begin(
        format!("NEARLINE {name} ({})", to_scan.target.location()),
        todo.len() as u64,
        0,
    );
    let parallel = Arc::new(Semaphore::new(options.parallel.max(1)));
    for pack in todo {
        if recorded.contains(&pack.key) {
            report.packs_already_recorded += 1;
        } else {
            restore_pack(index, to_scan, pack, options, &parallel, report).await?;
        }
        progress.done(1, 0);
        index
            .set_rebuild_checkpoint(&scope, &pack.key, now_millis())
            .await?;
    }
    Ok(())
}

/// The checkpoint of a scan of this target.
pub(super) fn scope(to_scan: &TargetToScan) -> String {
    format!("nearline:{}", to_scan.row.spec.name)
}

async fn restore_pack(
    index: &Index,
    to_scan: &TargetToScan,
    pack: &ListedPack,
    options: &RebuildOptions,
    parallel: &Arc<Semaphore>,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let target = &to_scan.target;
    let where_ = format!("{}{}", target.location(), pack.key);
    let contents = match target.read_contents(&pack.key, pack.size).await {
        Ok(contents) => contents,
        // An unreadable manifest: that pack is reported, the rest go on.
        Err(error) if error.kind == archive_core::nearline::NearlineErrorKind::Invalid => {
            report
                .problems
                .push(format!("{where_}: not recorded: {error}"));
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    if contents.format == PackFormat::Dcm4chee2 {
        return super::dcm4chee::register_tar(index, to_scan, pack, contents, parallel, report)
            .await;
    }
    let uids: Vec<&str> = contents
        .members
        .iter()
        .map(|m| m.sop_uid.as_str())
        .collect();
    let known = index.known_instances(&uids).await?;
    let mut missing = Vec::new();
    for member in &contents.members {
        match known.get(&member.sop_uid) {
            None => missing.push(member.clone()),
            Some(instance) => {
                if let Some(online) = &instance.online_sha256 {
                    if *online != member.sha256 {
                        report.conflicts.push(format!(
                            "SOP Instance {}: the ONLINE file has SHA-256 {online}, member `{}` \
                             of {where_} has {}; both are kept",
                            member.sop_uid, member.member_path, member.sha256
                        ));
                    }
                }
            }
        }
    }
    // Indexed in the order they were received: where a study's instances disagree on a
    // study-level attribute, the index keeps the first one's, as before the loss.
    missing.sort_by_key(|m| m.received_at.unwrap_or(contents.created_at));
    let described = describe_members(target, &pack.key, &contents, missing, parallel).await;
    let mut batch = Vec::with_capacity(described.len());
    let mut failed = Vec::new();
    for result in described {
        match result {
            Ok(new) => batch.push(new),
            Err(MemberError::Unreadable(problem)) => {
                // The target went away mid-pack: stop here; a rerun continues with this pack.
                return Err(RebuildError::Io(format!("{where_}: {problem}")));
            }
            Err(MemberError::Invalid(problem)) => failed.push(problem),
        }
    }
    if !failed.is_empty() {
        // A pack recorded without some of its members would fail every later read-back
        // (members it holds that the index does not know): it is reported, not recorded.
        report.problems.push(format!(
            "{where_}: not recorded: {} member(s) could not be indexed: {}",
            failed.len(),
            failed.join("; ")
        ));
        return Ok(());
    }
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
    let (status, error, verified_at) = if options.verify {
        verify(target.as_ref(), pack, &contents, report).await
    } else {
        (PackStatus::ToArchive, String::new(), None)
    };
    let found = FoundPack {
        study_uid: &contents.study_uid,
        target_id: to_scan.row.id,
        object_key: &pack.key,
        status,
        size: pack.size,
        sha256: "",
        error: &error,
        created_at: contents.created_at,
        verified_at,
        members: &contents.members,
    };
    if index.record_found_pack(&found, now_millis()).await? {
        report.packs_recorded += 1;
        match status {
            PackStatus::Archived => report.packs_archived += 1,
            PackStatus::VerifyFailed => report.packs_verify_failed += 1,
            _ => {}
        }
    } else {
        report.packs_already_recorded += 1;
    }
    Ok(())
}

/// Reads the pack back whole: ARCHIVED if every member matches its manifest entry.
async fn verify(
    target: &dyn NearlineTarget,
    pack: &ListedPack,
    contents: &PackContents,
    report: &mut RebuildReport,
) -> (PackStatus, String, Option<i64>) {
    let expected = ExpectedPack {
        key: pack.key.clone(),
        size: pack.size,
        sha256: String::new(),
        members: contents
            .members
            .iter()
            .map(|m| PackMemberRow {
                sop_uid: m.sop_uid.clone(),
                member_path: m.member_path.clone(),
                data_offset: m.data_offset as i64,
                size_bytes: m.size as i64,
                sha256: m.sha256.clone(),
                blake3: String::new(),
            })
            .collect(),
    };
    match target
        .verify_pack(&expected, Arc::new(TransferProgress::default()))
        .await
    {
        Ok(VerifyOutcome::Intact) => (PackStatus::Archived, String::new(), Some(now_millis())),
        Ok(VerifyOutcome::Damaged(problems)) => {
            let error = problems.join("; ");
            report
                .problems
                .push(format!("{}: damaged: {error}", pack.key));
            (PackStatus::VerifyFailed, error, None)
        }
        // Not readable now: left for verify-sync, as an unverified copy.
        Err(error) => {
            report.problems.push(format!(
                "{}: could not be read back ({error}); left TO_ARCHIVE for verify-sync",
                pack.key
            ));
            (PackStatus::ToArchive, String::new(), None)
        }
    }
}

/// Why a member could not be indexed.
#[derive(Clone, Debug)]
pub(super) enum MemberError {
    /// The target could not be read (down, refusing): worth a rerun.
    Unreadable(String),
    /// The member is not what its manifest says, or not readable DICOM.
    Invalid(String),
}

/// The members in `missing`, each indexed from its header (read by range, `parallel` at a
/// time), which must name the instance the manifest says.
async fn describe_members(
    target: &Arc<dyn NearlineTarget>,
    key: &str,
    contents: &PackContents,
    missing: Vec<PackedMember>,
    parallel: &Arc<Semaphore>,
) -> Vec<Result<NewInstance, MemberError>> {
    let heads = read_headers(target, key, &missing, parallel).await;
    missing
        .into_iter()
        .zip(heads)
        .map(|(member, head)| {
            let (record, metadata) = matches_manifest(&member, &contents.study_uid, head?)?;
            Ok(NewInstance {
                record,
                held: Held::InPackOnly { size: member.size },
                policy: DuplicatePolicy::KeepFirst,
                received_at: member.received_at.unwrap_or(contents.created_at),
                metadata,
            })
        })
        .collect()
}

/// Each member's header, read by range, `parallel` at a time, in the members' order.
pub(super) async fn read_headers(
    target: &Arc<dyn NearlineTarget>,
    key: &str,
    members: &[PackedMember],
    parallel: &Arc<Semaphore>,
) -> Vec<Result<Described, MemberError>> {
    let mut tasks = JoinSet::new();
    for (position, member) in members.iter().cloned().enumerate() {
        let permit = parallel.clone().acquire_owned().await;
        let target = target.clone();
        let key = key.to_string();
        tasks.spawn(async move {
            let _permit = permit;
            let result = read_member_header(target.as_ref(), &key, &member).await;
            (position, result)
        });
    }
    let mut results: Vec<Option<Result<Described, MemberError>>> = vec![None; members.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((position, result)) => results[position] = Some(result),
            Err(error) => tracing::warn!(%error, "rebuild: a member read stopped"),
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(MemberError::Unreadable("a member read stopped".into()))))
        .collect()
}

pub(super) type Described = (archive_core::model::InstanceRecord, Option<Vec<u8>>);

/// `described` (a member's header) if it names the instance the manifest says.
fn matches_manifest(
    member: &PackedMember,
    study_uid: &str,
    described: Described,
) -> Result<Described, MemberError> {
    let record = &described.0;
    if record.instance.sop_instance_uid != member.sop_uid
        || record.series.series_uid != member.series_uid
        || record.study.study_uid != study_uid
    {
        return Err(MemberError::Invalid(format!(
            "member `{}`: its header names SOP Instance {} of series {} of study {}, \
             the manifest {} of {} of {study_uid}: not indexed",
            member.member_path,
            record.instance.sop_instance_uid,
            record.series.series_uid,
            record.study.study_uid,
            member.sop_uid,
            member.series_uid
        )));
    }
    Ok(described)
}

/// The index record of one member, from its head (one range read; the whole member when its
/// header does not end in the first read).
pub(super) async fn read_member_header(
    target: &dyn NearlineTarget,
    key: &str,
    member: &PackedMember,
) -> Result<Described, MemberError> {
    let path = &member.member_path;
    let invalid = MemberError::Invalid;
    let mut length = member.size.min(HEAD_READ);
    let described = loop {
        let head = target
            .read_range(key, member.data_offset, length)
            .await
            .map_err(|e| match e.kind {
                archive_core::nearline::NearlineErrorKind::Unavailable => {
                    MemberError::Unreadable(format!("member `{path}`: cannot read: {e}"))
                }
                _ => invalid(format!("member `{path}`: cannot read: {e}")),
            })?;
        // A cut head may parse cleanly yet lack what follows the cut: only the whole member,
        // or a head that reaches Pixel Data (where the header ends), is complete.
        let complete = length == member.size || reaches_pixel_data(&head);
        if !complete && member.size <= LARGEST_WHOLE_READ {
            length = member.size;
            continue;
        }
        let parsed =
            tokio::task::spawn_blocking(move || describe_stored(ParseSource::Memory(&head)))
                .await
                .map_err(|e| invalid(format!("member `{path}`: the header parse stopped: {e}")))?;
        match parsed {
            Ok(described) if complete => break described,
            Ok(_) => {
                return Err(invalid(format!(
                    "member `{path}`: its header does not end in the first {length} bytes and \
                     the member is too large to read whole: not indexed"
                )))
            }
            // The cut may have fallen inside an element (bytes that only looked like the
            // Pixel Data tag): read the whole member if it is not too large.
            Err(_) if length < member.size && member.size <= LARGEST_WHOLE_READ => {
                length = member.size;
            }
            Err(error) => return Err(invalid(format!("member `{path}`: not indexed: {error}"))),
        }
    };
    Ok(described)
}

/// Whether `head` holds the start of the Pixel Data element, (7FE0,0010) little endian: the
/// header before it is complete. (Big endian and deflated objects never match; they are read
/// whole.)
fn reaches_pixel_data(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == [0xE0, 0x7F, 0x10, 0x00])
}

#[cfg(test)]
mod tests {
    use super::reaches_pixel_data;

    #[test]
    fn a_head_is_complete_only_when_it_reaches_pixel_data() {
        let mut head = vec![0u8; 300];
        assert!(!reaches_pixel_data(&head));
        head.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W']);
        assert!(reaches_pixel_data(&head));
    }
}
