//! Runs the cron schedules: each copy rule, each retention rule, verify-sync, and this node's
//! scavenge. Every node runs this loop; a firing is claimed in the database (`schedule_fire`),
//! so each firing runs on one node only (a scavenge firing is named after its node, so every
//! node gets its own).

use crate::Services;
use archive_core::config::{parse_schedule, CopyRuleConfig};
use archive_core::index::now_millis;
use archive_core::jobs::{JobType, NewJob};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Most studies one firing queues; the next firing takes the rest.
const MAX_JOBS_PER_FIRING: i64 = 10_000;
const VERIFY_SCHEDULE: &str = "verify-sync";
const FIXITY_SCHEDULE: &str = "fixity";

pub(crate) async fn run(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    // Firings before this node started are not caught up: the next one selects the same work.
    let mut last_checked: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut reported_bad: HashMap<String, String> = HashMap::new();
    let started = Utc::now();
    loop {
        let now = Utc::now();
        let mut due: Vec<(String, Schedule)> = Vec::new();
        match services.index.copy_rules().await {
            Ok(rules) => {
                for rule in rules.into_iter().filter(|r| r.rule.enabled) {
                    due.push((
                        format!("copy:{}", rule.rule.name),
                        Schedule::Copy(rule.rule),
                    ));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read copy rules"),
        }
        match services.index.retention_rules().await {
            Ok(rules) => {
                for rule in rules.into_iter().filter(|r| r.enabled) {
                    due.push((
                        format!("retention:{}", rule.name),
                        Schedule::Retention(rule),
                    ));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read retention rules"),
        }
        if !services.settings.verify_schedule.is_empty() {
            due.push((VERIFY_SCHEDULE.into(), Schedule::Verify));
        }
        if !services.settings.fixity_schedule.is_empty() {
            due.push((FIXITY_SCHEDULE.into(), Schedule::Fixity));
        }
        if !services.settings.scavenge_schedule.is_empty() {
            due.push((
                format!("scavenge:{}", services.settings.node_id),
                Schedule::Scavenge,
            ));
        }
        for (name, schedule) in due {
            let expression = match &schedule {
                Schedule::Copy(rule) => rule.schedule.clone(),
                Schedule::Retention(rule) => rule.schedule.clone(),
                Schedule::Verify => services.settings.verify_schedule.clone(),
                Schedule::Scavenge => services.settings.scavenge_schedule.clone(),
                Schedule::Fixity => services.settings.fixity_schedule.clone(),
            };
            let cron = match parse_schedule(&expression) {
                Ok(cron) => cron,
                Err(message) => {
                    if reported_bad.get(&name) != Some(&expression) {
                        tracing::error!(schedule = %name, %message, "schedule ignored");
                        reported_bad.insert(name.clone(), expression);
                    }
                    continue;
                }
            };
            let since = *last_checked.get(&name).unwrap_or(&started);
            last_checked.insert(name.clone(), now);
            // The latest firing in (since, now]; missed ones in between collapse into it.
            let Some(fire_at) = cron.after(&since).take_while(|t| *t <= now).last() else {
                continue;
            };
            fire(&services, &name, &schedule, fire_at).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick(now)) => {}
            _ = stop.changed() => return,
        }
    }
}

enum Schedule {
    Copy(CopyRuleConfig),
    Retention(archive_core::config::RetentionRuleConfig),
    Verify,
    Scavenge,
    Fixity,
}

/// Sleeps until just after the next whole second, so second-resolution schedules fire on time.
fn tick(now: DateTime<Utc>) -> Duration {
    let into_second = now.timestamp_subsec_millis() as u64;
    Duration::from_millis(1000 - into_second.min(999) + 5)
}

async fn fire(services: &Services, name: &str, schedule: &Schedule, fire_at: DateTime<Utc>) {
    let index = &services.index;
    let claimed = index
        .claim_schedule_fire(name, fire_at.timestamp_millis(), &services.settings.node_id)
        .await;
    match claimed {
        Ok(true) => {}
        Ok(false) => return, // another node runs this firing
        Err(error) => {
            tracing::warn!(schedule = name, %error, "cannot claim the schedule's firing");
            return;
        }
    }
    let result = match schedule {
        Schedule::Copy(rule) => fire_copy_rule(services, rule).await,
        Schedule::Retention(rule) => fire_retention_rule(services, rule).await,
        Schedule::Verify => fire_verify(services).await,
        Schedule::Fixity => crate::queue_job(
            &services.index,
            JobType::Fixity,
            "",
            "",
            "schedule",
            services.settings.max_attempts,
        )
        .await
        .map(|enqueued| usize::from(enqueued.created)),
        Schedule::Scavenge => {
            let settings = &services.settings;
            let node = settings.node_id.as_str();
            crate::queue_job(
                &services.index,
                JobType::Scavenge,
                "",
                node,
                "schedule",
                settings.max_attempts,
            )
            .await
            .map(|enqueued| usize::from(enqueued.created))
        }
    };
    match result {
        Ok(0) => tracing::debug!(schedule = name, "nothing to do"),
        Ok(jobs) => tracing::info!(schedule = name, jobs, at = %fire_at, "queued jobs"),
        Err(error) => tracing::warn!(schedule = name, %error, "schedule run failed"),
    }
}

async fn fire_copy_rule(
    services: &Services,
    rule: &CopyRuleConfig,
) -> archive_core::index::IndexResult<usize> {
    let mut queued = 0;
    for target in rule.target_names() {
        queued += copy_to(services, rule, target).await?;
    }
    Ok(queued)
}

/// Queues the copies `rule` wants on one of its targets.
async fn copy_to(
    services: &Services,
    rule: &CopyRuleConfig,
    target_name: &str,
) -> archive_core::index::IndexResult<usize> {
    let index = &services.index;
    let Some(target) = index.target(target_name).await? else {
        tracing::error!(rule = %rule.name, target = %target_name, "copy rule names a target that does not exist");
        return Ok(0);
    };
    let studies = index
        .copy_candidates(rule, target.id, now_millis(), MAX_JOBS_PER_FIRING)
        .await?;
    let mut queued = 0;
    for study in studies {
        let new = NewJob {
            job_type: JobType::Copy,
            study_uid: study,
            target_name: target_name.to_string(),
            created_by: format!("rule:{}", rule.name),
            max_attempts: services.settings.max_attempts,
        };
        // Re-checked in the insert itself: the list above may be stale by now.
        if let Some(job_id) = index
            .enqueue_rule_copy(&new, target.id, now_millis())
            .await?
        {
            tracing::info!(job_id, job_type = JobType::Copy.as_str(), study = %new.study_uid,
                target = %target_name, created_by = %new.created_by, "job queued");
            queued += 1;
        }
    }
    Ok(queued)
}

/// Queues a delete job for every study the rule would delete now (the preview's `delete`).
async fn fire_retention_rule(
    services: &Services,
    rule: &archive_core::config::RetentionRuleConfig,
) -> archive_core::index::IndexResult<usize> {
    let index = &services.index;
    let mut queued = 0;
    for entry in archive_core::retention::preview(index, rule).await? {
        if !entry.delete {
            continue;
        }
        let enqueued = crate::queue_job(
            index,
            JobType::Delete,
            &entry.study_uid,
            &rule.require_target,
            &format!("retention:{}", rule.name),
            services.settings.max_attempts,
        )
        .await?;
        queued += usize::from(enqueued.created);
    }
    Ok(queued)
}

async fn fire_verify(services: &Services) -> archive_core::index::IndexResult<usize> {
    let index = &services.index;
    let mut queued = 0;
    for (study, target) in index.packs_to_verify(MAX_JOBS_PER_FIRING).await? {
        let enqueued = crate::queue_job(
            index,
            JobType::Verify,
            &study,
            &target,
            "verify-sync",
            services.settings.max_attempts,
        )
        .await?;
        queued += usize::from(enqueued.created);
    }
    Ok(queued)
}
