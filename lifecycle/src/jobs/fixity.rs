//! A fixity job: re-reads the ARCHIVED packs and re-hashes the ONLINE files whose last check
//! is older than `fixity_cycle_days`, oldest first, until the 24-hour byte budget is spent.
//! A pack larger than what is left of the budget has some of its members read by range and
//! checked, continuing where the last run stopped, until every member was checked once.
//! Each check is recorded. A copy that no longer matches is taken out of service (pack
//! VERIFY_FAILED, file DAMAGED), counted, audited, and repaired from the other copy: a new
//! pack from ONLINE, or the study restored ONLINE from another target's ARCHIVED pack (and,
//! for a damaged pack, copied again once it is back).

use super::{JobContext, JobError};
use crate::Services;
use archive_core::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use archive_core::index::{now_millis, FixityItem, FixityRecord};
use archive_core::jobs::JobType;
use archive_core::metrics;
use archive_core::nearline::{
    ExpectedPack, NearlineErrorKind, NearlineTarget, PackMemberRow, PackStatus, VerifyOutcome,
};
use archive_core::query::Level;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// `created_by` of a restore queued to repair a damaged pack, followed by the pack's target:
/// the restore then queues the new copy (see `restore.rs`).
pub(crate) const FIXITY_REPAIR: &str = "fixity:";
const DAY_MS: i64 = 86_400_000;
/// Most items one job looks at; the next run takes the rest.
const MAX_ITEMS: i64 = 100_000;

pub(crate) async fn run(ctx: &JobContext<'_>) -> Result<(), JobError> {
    let (services, reporter) = (ctx.services, ctx.reporter);
    let settings = &services.settings;
    let index = &services.index;
    let now = now_millis();
    let read_today = index.fixity_bytes_since(now - DAY_MS).await?;
    let mut budget = settings.fixity_max_bytes_per_day.saturating_sub(read_today);
    let due = index
        .fixity_due(now - settings.fixity_cycle_ms, MAX_ITEMS)
        .await?;
    reporter.set_totals(due.len(), due.iter().map(FixityItem::size).sum());
    let (mut checked, mut over_budget) = (0u64, 0u64);
    let mut damaged = Vec::new();
    let mut unreadable = Vec::new();
    for item in &due {
        if budget == 0 {
            over_budget += 1;
            continue;
        }
        let outcome = match item {
            // A pack larger than what is left today: some of its members, by range.
            FixityItem::Pack { .. } if item.size() > budget => {
                match sample_pack(services, item, budget, settings.fixity_max_bytes_per_day).await {
                    Ok(Some(sampled)) => Ok(sampled),
                    Ok(None) => {
                        over_budget += 1;
                        continue;
                    }
                    Err(error) => Err(error),
                }
            }
            _ if item.size() > budget => {
                over_budget += 1;
                continue;
            }
            FixityItem::Pack { .. } => check_pack(services, item)
                .await
                .map(|problem| Checked::whole(item, problem)),
            FixityItem::File {
                root, path, sha256, ..
            } => check_file(root.clone(), path.clone(), sha256)
                .await
                .map(|problem| Checked::whole(item, problem)),
        };
        let checked_now = match outcome {
            Ok(checked_now) => checked_now,
            // The target or filesystem is away: not a finding about the copy; next run.
            Err(error) => {
                unreadable.push(error);
                continue;
            }
        };
        let bytes = checked_now.bytes;
        budget = budget.saturating_sub(bytes);
        checked += 1;
        metrics::FIXITY_CHECKS.add(1);
        metrics::FIXITY_BYTES.add(bytes);
        reporter.transfer.add_item();
        reporter.transfer.add_bytes(bytes);
        if let Some(why) = checked_now.interrupted {
            // What was checked before the target went away counts; the rest is next run's.
            unreadable.push(why);
        }
        let problem = checked_now.problem;
        let detail = problem.clone().unwrap_or(checked_now.note);
        index
            .record_fixity(
                item,
                &FixityRecord {
                    at: now_millis(),
                    bytes,
                    ok: problem.is_none(),
                    detail: &detail,
                    next_member: checked_now.next_member,
                },
            )
            .await?;
        if let Some(problem) = problem {
            if let Some(done) = take_out_and_repair(services, item, &problem).await? {
                damaged.push(done);
            }
        }
    }
    tracing::info!(
        checked,
        damaged = damaged.len(),
        unreadable = unreadable.len(),
        left_for_later = over_budget,
        "fixity checks done"
    );
    if !damaged.is_empty() {
        return Err(JobError::permanent(format!(
            "{} damaged: {}",
            damaged.len(),
            damaged.join(" | ")
        )));
    }
    if let Some(first) = unreadable.first() {
        return Err(JobError::retry(format!(
            "{} copies could not be read now (first: {first}); the next run checks them",
            unreadable.len()
        )));
    }
    Ok(())
}

/// What one check found and read.
struct Checked {
    /// What did not match, if anything did not.
    problem: Option<String>,
    bytes: u64,
    /// See [`FixityRecord::next_member`].
    next_member: i64,
    /// Recorded when nothing was wrong (what a partial check covered).
    note: String,
    /// The target went away part way: the members before were checked, the rest wait.
    interrupted: Option<String>,
}

impl Checked {
    fn whole(item: &FixityItem, problem: Option<String>) -> Checked {
        Checked {
            problem,
            bytes: item.size(),
            next_member: 0,
            note: String::new(),
            interrupted: None,
        }
    }
}

/// A pack to check: its target, key and the members the index recorded.
struct PackToCheck {
    target: Arc<dyn NearlineTarget>,
    expected: ExpectedPack,
}

async fn pack_to_check(services: &Services, item: &FixityItem) -> Result<PackToCheck, String> {
    let FixityItem::Pack {
        pack_id,
        study_uid,
        target_name,
        ..
    } = item
    else {
        return Err("not a pack".into());
    };
    let index = &services.index;
    let pack = index
        .packs_of_study(study_uid)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|p| p.id == *pack_id)
        .ok_or_else(|| format!("pack {pack_id} is gone"))?;
    let row = index
        .target(target_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("target `{target_name}` no longer exists"))?;
    let target = services.targets.get(&row).await.map_err(|e| e.message)?;
    let expected = ExpectedPack {
        key: pack.object_key.clone(),
        size: pack.size_bytes.max(0) as u64,
        sha256: pack.sha256.clone(),
        members: index
            .pack_members(pack.id)
            .await
            .map_err(|e| e.to_string())?,
    };
    Ok(PackToCheck { target, expected })
}

/// Reads a pack back whole against what the index recorded: `Some(problems)` if damaged.
async fn check_pack(services: &Services, item: &FixityItem) -> Result<Option<String>, String> {
    let pack = pack_to_check(services, item).await?;
    match pack
        .target
        .verify_pack(&pack.expected, Default::default())
        .await
    {
        Ok(VerifyOutcome::Intact) => Ok(None),
        Ok(VerifyOutcome::Damaged(problems)) => Ok(Some(problems.join("; "))),
        Err(error) => Err(format!("{}: {}", pack.expected.key, error.message)),
    }
}

/// Checks the members of a pack too large for what is left of the budget, in tar order from
/// where this cycle left off, each read by range and hashed, as many as `budget` allows.
/// A member larger than the whole daily budget (`daily`) could never be read: it is passed
/// over and named in the record. `None` when not even the next member fits (the pack waits
/// for tomorrow's budget).
async fn sample_pack(
    services: &Services,
    item: &FixityItem,
    budget: u64,
    daily: u64,
) -> Result<Option<Checked>, String> {
    let FixityItem::Pack { resume_at, .. } = item else {
        return Err("not a pack".into());
    };
    let PackToCheck {
        target,
        mut expected,
    } = pack_to_check(services, item).await?;
    expected.members.sort_by_key(|m| m.data_offset);
    let total = expected.members.len();
    let start = usize::try_from(*resume_at)
        .ok()
        .filter(|start| *start < total)
        .unwrap_or(0);
    let mut spent = 0u64;
    let mut next = start;
    let mut problem = None;
    let mut interrupted = None;
    let mut passed_over = Vec::new();
    for member in &expected.members[start..] {
        let size = member.size_bytes.max(0) as u64;
        if size > daily {
            passed_over.push(member.member_path.clone());
            next += 1;
            continue;
        }
        if spent + size > budget {
            break;
        }
        match check_member(target.as_ref(), &expected.key, member).await {
            Ok(found) => problem = found,
            Err(why) => {
                interrupted = Some(why);
                break;
            }
        }
        spent += size;
        next += 1;
        if problem.is_some() {
            break;
        }
    }
    if next == start && total > 0 {
        return match interrupted {
            Some(why) => Err(why),
            None => Ok(None),
        };
    }
    let complete = next == total || problem.is_some();
    let mut note = format!(
        "members {}-{next} of {total} checked by range{}",
        start + 1,
        if complete {
            "; every member checked this cycle"
        } else {
            ""
        }
    );
    if !passed_over.is_empty() {
        note.push_str(&format!(
            "; larger than the daily budget, not checked: {}",
            passed_over.join(", ")
        ));
    }
    Ok(Some(Checked {
        problem,
        bytes: spent,
        next_member: if complete { 0 } else { next as i64 },
        note,
        interrupted,
    }))
}

/// One member read by range (in pieces, never whole in memory) against its SHA-256.
async fn check_member(
    target: &dyn NearlineTarget,
    key: &str,
    member: &PackMemberRow,
) -> Result<Option<String>, String> {
    const PIECE: u64 = 8 << 20;
    let size = member.size_bytes.max(0) as u64;
    let start = member.data_offset.max(0) as u64;
    let mut sha = Sha256::new();
    let mut done = 0u64;
    while done < size {
        let piece = (size - done).min(PIECE);
        let bytes = match target.read_range(key, start + done, piece).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind == NearlineErrorKind::Unavailable => {
                return Err(format!("{key}: {}", error.message))
            }
            // Not there (a truncated or replaced object): a finding about the copy.
            Err(error) => {
                return Ok(Some(format!(
                    "`{}` cannot be read: {}",
                    member.member_path, error.message
                )))
            }
        };
        if bytes.len() as u64 != piece {
            return Ok(Some(format!(
                "`{}`: {} bytes at {} asked, {} read",
                member.member_path,
                piece,
                start + done,
                bytes.len()
            )));
        }
        sha.update(&bytes);
        done += piece;
    }
    let actual = hex::encode(sha.finalize());
    Ok((actual != member.sha256).then(|| {
        format!(
            "`{}` (SOP Instance {}) has SHA-256 {actual}, the index records {}",
            member.member_path, member.sop_uid, member.sha256
        )
    }))
}

/// Re-hashes an ONLINE file: `Some(problem)` if it is missing or its SHA-256 changed.
async fn check_file(
    root: PathBuf,
    path: PathBuf,
    recorded: &str,
) -> Result<Option<String>, String> {
    let recorded = recorded.to_string();
    tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // An absent or empty root is a filesystem not mounted: not a finding.
                let mounted = std::fs::read_dir(&root).is_ok_and(|mut e| e.next().is_some());
                if !mounted {
                    return Err(format!("{} is not mounted or empty", root.display()));
                }
                return Ok(Some(format!("{} is missing", path.display())));
            }
            Err(error) => return Err(format!("cannot open {}: {error}", path.display())),
        };
        let mut sha = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            sha.update(&buffer[..n]);
        }
        let actual = hex::encode(sha.finalize());
        Ok((actual != recorded).then(|| {
            format!(
                "{} has SHA-256 {actual}, the index records {recorded}",
                path.display()
            )
        }))
    })
    .await
    .map_err(|e| format!("the hashing thread stopped: {e}"))?
}

/// Takes a damaged copy out of service and queues its repair; returns what was done, or
/// `None` when the file's row changed since it was read (deleted or replaced meanwhile).
async fn take_out_and_repair(
    services: &Services,
    item: &FixityItem,
    problem: &str,
) -> Result<Option<String>, JobError> {
    let index = &services.index;
    let attempts = services.settings.max_attempts;
    metrics::FIXITY_FAILURES.add(1);
    let (study_uid, what, repair) = match item {
        FixityItem::Pack {
            pack_id,
            study_uid,
            target_name,
            ..
        } => {
            index
                .set_pack_status(*pack_id, PackStatus::VerifyFailed, problem, now_millis())
                .await?;
            // Instances without an ONLINE file must come back ONLINE (from another target's
            // ARCHIVED copy) before they can be copied again.
            let from_other_target = !index
                .nearline_locations(Level::Study, std::slice::from_ref(study_uid))
                .await?
                .is_empty();
            let online = !index.study_locations(study_uid).await?.is_empty();
            let repair = if !online && !from_other_target {
                "no other copy to repair it from".to_string()
            } else if from_other_target {
                let by = format!("{FIXITY_REPAIR}{target_name}");
                let job =
                    crate::queue_job(index, JobType::Restore, study_uid, "", &by, attempts).await?;
                format!("restore job {} then a new copy", job.job_id)
            } else {
                let job = crate::queue_job(
                    index,
                    JobType::Copy,
                    study_uid,
                    target_name,
                    "fixity",
                    attempts,
                )
                .await?;
                format!("copy job {}", job.job_id)
            };
            (
                study_uid,
                format!("pack {pack_id} on {target_name}"),
                repair,
            )
        }
        FixityItem::File {
            file_id,
            study_uid,
            sha256,
            ..
        } => {
            if !index.mark_file_damaged(*file_id, sha256, study_uid).await? {
                return Ok(None);
            }
            let restorable = !index
                .nearline_locations(Level::Study, std::slice::from_ref(study_uid))
                .await?
                .is_empty();
            let repair = if restorable {
                let job =
                    crate::queue_job(index, JobType::Restore, study_uid, "", "fixity", attempts)
                        .await?;
                format!("restore job {}", job.job_id)
            } else {
                "no other copy to repair it from".to_string()
            };
            (study_uid, format!("ONLINE file {file_id}"), repair)
        }
    };
    tracing::error!(copy = %what, %problem, %repair, "fixity check failed: copy taken out of service");
    let event = NewAuditEvent::new(AuditAction::Fixity, AuditOutcome::Failure, "fixity")
        .study(study_uid.as_str())
        .detail(format!("{what}: {problem}; repair: {repair}"));
    services.auditor.record(event).await;
    Ok(Some(format!("{what} ({repair})")))
}
