//! The jobs table and schedule firings over SQL. PostgreSQL claims with
//! `FOR UPDATE SKIP LOCKED`, so nodes never wait on each other's claims; SQLite serializes
//! writers anyway (one node), and the same single UPDATE is atomic there.

use super::{Dialect, Index, IndexResult};
use crate::jobs::{
    Enqueued, HandBack, Job, JobFilter, JobOutcome, JobProgress, JobState, JobType, NewJob,
};

/// The error a job gets when every one of its runs ended with its node gone (SQL literal).
const LOST_RUNS: &str =
    "'its node stopped (crash, kill or lost database) during every attempt; see that node''s log'";

const JOB_COLUMNS: &str = "id, job_type, study_uid, target_name, state, attempts, max_attempts, \
    next_run_at, owner_node, lease_expires_at, done_items, total_items, done_bytes, total_bytes, \
    last_error, created_by, created_at, updated_at, finished_at";

/// The jobs table: every node sees every job; claiming with a lease makes each run once.
impl Index {
    /// Queues a job unless a live (QUEUED or RUNNING) one of the same type, study and target
    /// exists; either way returns the live job's id.
    pub async fn enqueue_job(&self, new: &NewJob, now: i64) -> IndexResult<Enqueued> {
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO job (job_type, study_uid, target_name, state, max_attempts, next_run_at, \
             created_by, created_at, updated_at) VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6, $5, $5) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(new.job_type.as_str())
        .bind(&new.study_uid)
        .bind(&new.target_name)
        .bind(i64::from(new.max_attempts))
        .bind(now)
        .bind(&new.created_by)
        .fetch_optional(self.pool())
        .await?;
        if let Some((job_id,)) = inserted {
            return Ok(Enqueued {
                job_id,
                created: true,
            });
        }
        let (job_id,): (i64,) = sqlx::query_as(
            "SELECT id FROM job WHERE job_type = $1 AND study_uid = $2 AND target_name = $3 \
             AND state IN ('QUEUED', 'RUNNING')",
        )
        .bind(new.job_type.as_str())
        .bind(&new.study_uid)
        .bind(&new.target_name)
        .fetch_one(self.pool())
        .await?;
        Ok(Enqueued {
            job_id,
            created: false,
        })
    }

    /// Queues a COPY job for a copy rule, in one statement that re-checks what the rule's
    /// candidate list saw: no live COPY job for the study and target, and at least one ONLINE
    /// instance of the study without an UPLOADING, TO_ARCHIVE or ARCHIVED pack on the target.
    /// `None` when either check fails. Why one statement: a candidate listed while another
    /// node's copy was running would otherwise be queued again just after that copy finished
    /// (the one-live-job index no longer stops it), as a job with nothing to copy. The copy
    /// job records its pack's members before it ends, so any snapshot sees either the live
    /// job or the members.
    pub async fn enqueue_rule_copy(
        &self,
        new: &NewJob,
        target_id: i64,
        now: i64,
    ) -> IndexResult<Option<i64>> {
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO job (job_type, study_uid, target_name, state, max_attempts, next_run_at, \
             created_by, created_at, updated_at) \
             SELECT $1, $2, $3, 'QUEUED', $4, $5, $6, $5, $5 \
             WHERE NOT EXISTS (SELECT 1 FROM job j WHERE j.job_type = $1 AND j.study_uid = $2 \
                AND j.target_name = $3 AND j.state IN ('QUEUED', 'RUNNING')) \
             AND EXISTS (SELECT 1 FROM study s JOIN series se ON se.study_fk = s.id \
                JOIN instance i ON i.series_fk = se.id JOIN file f ON f.instance_fk = i.id \
                WHERE s.study_uid = $2 AND f.status = 'OK' \
                AND NOT EXISTS (SELECT 1 FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk \
                    WHERE pm.instance_fk = i.id AND p.target_fk = $7 \
                    AND p.status IN ('UPLOADING', 'TO_ARCHIVE', 'ARCHIVED'))) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(new.job_type.as_str())
        .bind(&new.study_uid)
        .bind(&new.target_name)
        .bind(i64::from(new.max_attempts))
        .bind(now)
        .bind(&new.created_by)
        .bind(target_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(inserted.map(|(id,)| id))
    }

    /// Takes the next due job (or one whose owner's lease expired) for `node`.
    pub async fn claim_job(&self, node: &str, now: i64, lease_ms: i64) -> IndexResult<Option<Job>> {
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // Only the job types this build knows: during a rolling upgrade an older node leaves
        // a newer node's kinds of job alone instead of claiming what it cannot run. A
        // scavenge job cleans one node's own directories: only that node takes it.
        let known: Vec<String> = JobType::ALL
            .iter()
            .map(|t| format!("'{}'", t.as_str()))
            .collect();
        let known = known.join(", ");
        // A lease that expired means its node died mid-run (or lost the database for longer
        // than the lease). That run counted as an attempt when it was claimed; a job that
        // has used them all is not run again, or a job that kills its node would loop forever.
        sqlx::query(&format!(
            "UPDATE job SET state = 'FAILED', finished_at = $1, updated_at = $1, \
             lease_expires_at = 0, last_error = {LOST_RUNS} \
             WHERE state = 'RUNNING' AND lease_expires_at < $1 AND attempts >= max_attempts"
        ))
        .bind(now)
        .execute(self.pool())
        .await?;
        let sql = format!(
            "UPDATE job SET state = 'RUNNING', owner_node = $1, lease_expires_at = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM job WHERE ((state = 'QUEUED' AND next_run_at <= $3) \
                OR (state = 'RUNNING' AND lease_expires_at < $3)) AND job_type IN ({known}) \
                AND (job_type <> 'SCAVENGE' OR target_name = $1) \
                ORDER BY next_run_at, id LIMIT 1{lock}) \
             RETURNING {JOB_COLUMNS}"
        );
        Ok(sqlx::query_as(&sql)
            .bind(node)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Extends the lease and records progress. `false`: the job is no longer ours (cancelled,
    /// or taken over after our lease expired) and the caller must stop working on it.
    pub async fn renew_job(
        &self,
        id: i64,
        node: &str,
        now: i64,
        lease_ms: i64,
        progress: JobProgress,
    ) -> IndexResult<bool> {
        let result = sqlx::query(
            "UPDATE job SET lease_expires_at = $1, updated_at = $2, done_items = $3, \
             total_items = $4, done_bytes = $5, total_bytes = $6 \
             WHERE id = $7 AND owner_node = $8 AND state = 'RUNNING'",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(progress.done_items)
        .bind(progress.total_items)
        .bind(progress.done_bytes)
        .bind(progress.total_bytes)
        .bind(id)
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records how a run ended; `false` if the job was no longer ours.
    pub async fn finish_job(
        &self,
        id: i64,
        node: &str,
        now: i64,
        outcome: &JobOutcome,
    ) -> IndexResult<bool> {
        let (state, next_run_at, error, finished_at) = match outcome {
            JobOutcome::Done => (JobState::Done, now, "", Some(now)),
            JobOutcome::Retry { at, error } => (JobState::Queued, *at, error.as_str(), None),
            JobOutcome::Failed { error } => (JobState::Failed, now, error.as_str(), Some(now)),
        };
        let result = sqlx::query(
            "UPDATE job SET state = $1, next_run_at = $2, last_error = $3, finished_at = $4, \
             updated_at = $5, lease_expires_at = 0 \
             WHERE id = $6 AND owner_node = $7 AND state = 'RUNNING'",
        )
        .bind(state.as_str())
        .bind(next_run_at)
        .bind(error)
        .bind(finished_at)
        .bind(now)
        .bind(id)
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Puts this node's RUNNING jobs back in the queue: at start, whatever it was running when
    /// it died (those out of attempts end FAILED); at shutdown, what it stops running (that
    /// interrupted run is not counted).
    pub async fn requeue_jobs_of_node(
        &self,
        node: &str,
        now: i64,
        why: HandBack,
    ) -> IndexResult<u64> {
        let sql = match why {
            HandBack::AfterCrash => format!(
                "UPDATE job SET \
                 state = CASE WHEN attempts >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END, \
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
                 last_error = CASE WHEN attempts >= max_attempts THEN {LOST_RUNS} \
                     ELSE last_error END, \
                 next_run_at = $1, updated_at = $1, lease_expires_at = 0 \
                 WHERE owner_node = $2 AND state = 'RUNNING'"
            ),
            HandBack::Shutdown => "UPDATE job SET state = 'QUEUED', next_run_at = $1, \
                 updated_at = $1, lease_expires_at = 0, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
                 WHERE owner_node = $2 AND state = 'RUNNING'"
                .to_string(),
        };
        let result = sqlx::query(&sql)
            .bind(now)
            .bind(node)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected())
    }

    pub async fn job(&self, id: i64) -> IndexResult<Option<Job>> {
        Ok(
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM job WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> IndexResult<Vec<Job>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM job WHERE 1 = 1");
        let mut binds: Vec<&str> = Vec::new();
        for (column, value) in [
            ("state", filter.state.map(JobState::as_str)),
            ("job_type", filter.job_type.map(|t| t.as_str())),
            ("study_uid", filter.study_uid.as_deref()),
        ] {
            if let Some(value) = value {
                binds.push(value);
                sql.push_str(&format!(" AND {column} = ${}", binds.len()));
            }
        }
        let limit = if filter.limit > 0 { filter.limit } else { 1000 };
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let mut query = sqlx::query_as(&sql);
        for value in binds {
            query = query.bind(value);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// Cancels a QUEUED or RUNNING job; `false` if it had already ended.
    pub async fn cancel_job(&self, id: i64, now: i64) -> IndexResult<bool> {
        let result = sqlx::query(
            "UPDATE job SET state = 'CANCELLED', finished_at = $1, updated_at = $1, \
             last_error = 'cancelled by an administrator' \
             WHERE id = $2 AND state IN ('QUEUED', 'RUNNING')",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Claims one firing of a named schedule for `node`: `true` for exactly one caller.
    pub async fn claim_schedule_fire(
        &self,
        name: &str,
        fire_at: i64,
        node: &str,
    ) -> IndexResult<bool> {
        let result = sqlx::query(
            "INSERT INTO schedule_fire (schedule_name, fire_at, node) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(fire_at)
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
