//! What a retention rule would delete, and — unlike dcm4chee 2.x — why every other study stays:
//! the dry-run preview and the deletion service use this same evaluation.

use crate::config::RetentionRuleConfig;
use crate::index::{Index, IndexResult, RetentionCandidate};
use crate::online::GroupUsage;
use serde::Serialize;

/// Most studies one evaluation looks at (least recently accessed first).
pub const MAX_CANDIDATES: i64 = 10_000;

/// Evaluates a rule against the index and the group's filesystems now: the dry-run preview,
/// and what the deletion service acts on.
pub async fn preview(index: &Index, rule: &RetentionRuleConfig) -> IndexResult<Vec<PreviewEntry>> {
    let candidates = index.retention_candidates(rule, MAX_CANDIDATES).await?;
    let filesystems = index.filesystems().await?;
    let usage = crate::online::group_usage(&filesystems, &rule.group);
    Ok(evaluate(
        rule,
        &candidates,
        crate::index::now_millis(),
        usage,
        index.min_archived_copies(),
    ))
}

const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreviewEntry {
    pub study_uid: String,
    pub online_bytes: i64,
    pub last_accessed_at: i64,
    pub delete: bool,
    /// Why it would be deleted, or every reason it is held back.
    pub reasons: Vec<String>,
}

/// Evaluates `rule` over its candidates (least recently accessed first).
pub fn evaluate(
    rule: &RetentionRuleConfig,
    candidates: &[RetentionCandidate],
    now: i64,
    usage: Option<GroupUsage>,
    min_copies: u32,
) -> Vec<PreviewEntry> {
    // Bytes the watermark wants freed, if the group is below it.
    let mut watermark_wants: i64 = match (rule.free_below_percent, rule.free_target_percent, usage)
    {
        (Some(below), Some(target), Some(usage)) if usage.free_percent() < f64::from(below) => {
            let wanted_free = usage.total as f64 * f64::from(target) / 100.0;
            (wanted_free - usage.free as f64).max(0.0) as i64
        }
        _ => 0,
    };
    let mut entries = Vec::with_capacity(candidates.len());
    for study in candidates {
        let mut held = Vec::new();
        if study.verified < study.instances {
            let missing = study.instances - study.verified;
            let on = if rule.require_target.is_empty() {
                String::new()
            } else {
                format!(" on target `{}`", rule.require_target)
            };
            let mut detail = Vec::new();
            if study.awaiting_verification > 0 {
                detail.push(format!(
                    "{} awaiting verify-sync (TO_ARCHIVE)",
                    study.awaiting_verification
                ));
            }
            if study.verify_failed > 0 {
                detail.push(format!(
                    "{} whose copy failed verification (VERIFY_FAILED)",
                    study.verify_failed
                ));
            }
            let not_copied = missing - study.awaiting_verification - study.verify_failed;
            if not_copied > 0 && min_copies > 1 {
                detail.push(format!("{not_copied} on too few targets yet"));
            } else if not_copied > 0 {
                detail.push(format!("{not_copied} not copied yet"));
            }
            let wanted = if min_copies > 1 {
                format!("fewer than {min_copies} verified NEARLINE copies (lifecycle.min_archived_copies)")
            } else {
                "no verified NEARLINE copy".to_string()
            };
            held.push(format!(
                "{missing} of {} instances have {wanted}{on} ({})",
                study.instances,
                detail.join(", ")
            ));
        }
        let age_days = (now - study.received_at) / DAY_MS;
        if age_days < i64::from(rule.min_study_age_days) {
            held.push(format!(
                "received {age_days} days ago (rule: at least {} days)",
                rule.min_study_age_days
            ));
        }
        let idle_days = (now - study.last_accessed_at) / DAY_MS;
        let idle_enough = rule
            .not_accessed_days
            .is_some_and(|days| now - study.last_accessed_at >= i64::from(days) * DAY_MS);
        let by_watermark = watermark_wants > 0;
        let selected = if idle_enough {
            Some(format!(
                "not accessed for {idle_days} days (rule: {} days)",
                rule.not_accessed_days.unwrap_or(0)
            ))
        } else if by_watermark {
            Some(format!(
                "free space is {:.1}% (rule: below {}% frees least recently accessed studies until {}%)",
                usage.map(|u| u.free_percent()).unwrap_or(100.0),
                rule.free_below_percent.unwrap_or(0),
                rule.free_target_percent.unwrap_or(0)
            ))
        } else {
            None
        };
        match (selected, held.is_empty()) {
            (Some(reason), true) => {
                if !idle_enough {
                    watermark_wants -= study.online_bytes;
                }
                entries.push(PreviewEntry {
                    study_uid: study.study_uid.clone(),
                    online_bytes: study.online_bytes,
                    last_accessed_at: study.last_accessed_at,
                    delete: true,
                    reasons: vec![reason],
                });
            }
            (selected, _) => {
                if selected.is_none() {
                    let mut why = Vec::new();
                    if let Some(days) = rule.not_accessed_days {
                        why.push(format!("accessed {idle_days} days ago (rule: {days} days)"));
                    }
                    if rule.free_below_percent.is_some() {
                        why.push(match usage {
                            Some(u)
                                if u.free_percent()
                                    < f64::from(rule.free_below_percent.unwrap_or(0)) =>
                            {
                                "the watermark is satisfied by less recently accessed studies"
                                    .to_string()
                            }
                            Some(u) => format!(
                                "free space is {:.1}% (rule starts below {}%)",
                                u.free_percent(),
                                rule.free_below_percent.unwrap_or(0)
                            ),
                            None => "free space unknown".to_string(),
                        });
                    }
                    held.push(why.join("; "));
                }
                entries.push(PreviewEntry {
                    study_uid: study.study_uid.clone(),
                    online_bytes: study.online_bytes,
                    last_accessed_at: study.last_accessed_at,
                    delete: false,
                    reasons: held,
                });
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(
        uid: &str,
        accessed_days_ago: i64,
        verified: i64,
        awaiting: i64,
        failed: i64,
    ) -> RetentionCandidate {
        let now = 100 * DAY_MS;
        RetentionCandidate {
            study_uid: uid.into(),
            received_at: now - 60 * DAY_MS,
            last_accessed_at: now - accessed_days_ago * DAY_MS,
            online_bytes: 1000,
            instances: 4,
            verified,
            awaiting_verification: awaiting,
            verify_failed: failed,
        }
    }

    fn rule() -> RetentionRuleConfig {
        RetentionRuleConfig {
            name: "r".into(),
            schedule: "0 0 * * * *".into(),
            not_accessed_days: Some(30),
            ..RetentionRuleConfig::default()
        }
    }

    #[test]
    fn unverified_copies_hold_a_study_back_whatever_the_rule_says() {
        let now = 100 * DAY_MS;
        let entries = evaluate(
            &rule(),
            &[
                study("old-ok", 40, 4, 0, 0),
                study("old-pending", 40, 1, 3, 0),
                study("old-failed", 40, 2, 0, 2),
                study("recent", 5, 4, 0, 0),
            ],
            now,
            None,
            1,
        );
        let decided: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.study_uid.as_str(), e.delete))
            .collect();
        assert_eq!(
            decided,
            vec![
                ("old-ok", true),
                ("old-pending", false),
                ("old-failed", false),
                ("recent", false)
            ]
        );
        assert!(entries[0].reasons[0].contains("not accessed for 40 days"));
        assert!(entries[1].reasons[0].contains("3 of 4 instances have no verified NEARLINE copy (3 awaiting verify-sync (TO_ARCHIVE))"), "{:?}", entries[1].reasons);
        assert!(
            entries[2].reasons[0].contains("VERIFY_FAILED"),
            "{:?}",
            entries[2].reasons
        );
        assert!(
            entries[3].reasons[0].contains("accessed 5 days ago (rule: 30 days)"),
            "{:?}",
            entries[3].reasons
        );
    }

    #[test]
    fn the_watermark_frees_least_recently_accessed_studies_until_its_target() {
        let now = 100 * DAY_MS;
        let watermark = RetentionRuleConfig {
            not_accessed_days: None,
            free_below_percent: Some(10),
            free_target_percent: Some(20),
            ..rule()
        };
        // 5% free of 20,000 bytes: 3,000 bytes to free = three studies of 1,000.
        let usage = GroupUsage {
            free: 1000,
            total: 20_000,
        };
        let studies: Vec<_> = (0..5)
            .map(|n| study(&format!("s{n}"), 50 - n, 4, 0, 0))
            .collect();
        let entries = evaluate(&watermark, &studies, now, Some(usage), 1);
        let deleted: Vec<&str> = entries
            .iter()
            .filter(|e| e.delete)
            .map(|e| e.study_uid.as_str())
            .collect();
        assert_eq!(deleted, vec!["s0", "s1", "s2"]);
        assert!(
            entries[4].reasons[0].contains("satisfied"),
            "{:?}",
            entries[4].reasons
        );
        let plenty = GroupUsage {
            free: 15_000,
            total: 20_000,
        };
        assert!(evaluate(&watermark, &studies, now, Some(plenty), 1)
            .iter()
            .all(|e| !e.delete));
    }
}
