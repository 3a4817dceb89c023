//! The audit trail's table: written in batches by the auditor, read by the API and UI. There
//! is no method that updates or deletes an event (the table's triggers refuse it too).

use super::placeholders::values_placeholders;
use super::{Index, IndexResult};
use crate::audit::{AuditEvent, AuditFilter, NewAuditEvent};

const COLUMNS: &str = "id, at, node, action, outcome, actor, peer, study_uid, patient_id, detail";

impl Index {
    /// Appends events (time, event) recorded on `node`, in one statement.
    pub async fn insert_audit_events(
        &self,
        node: &str,
        events: &[(i64, NewAuditEvent)],
    ) -> IndexResult<()> {
        // 9 values per row: well under both engines' bind limits for the auditor's batches.
        for chunk in events.chunks(500) {
            let sql = format!(
                "INSERT INTO audit_event (at, node, action, outcome, actor, peer, study_uid, \
                 patient_id, detail) VALUES {}",
                values_placeholders(chunk.len(), 9)
            );
            // Not kept in the connection's statement cache: the text differs with every
            // batch size, and caching each would evict the statements queries reuse.
            let mut query = sqlx::query(&sql).persistent(false);
            for (at, event) in chunk {
                query = query
                    .bind(*at)
                    .bind(node)
                    .bind(event.action.as_str())
                    .bind(event.outcome.as_str())
                    .bind(event.actor.as_str())
                    .bind(event.peer.as_str())
                    .bind(event.study_uid.as_str())
                    .bind(event.patient_id.as_str())
                    .bind(event.detail.as_str());
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Events matching `filter`, newest first.
    pub async fn list_audit_events(&self, filter: &AuditFilter) -> IndexResult<Vec<AuditEvent>> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_event WHERE 1 = 1");
        let mut texts: Vec<&str> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        let mut next = 1;
        for (column, value) in [
            ("action", filter.action.map(|a| a.as_str())),
            ("outcome", filter.outcome.map(|o| o.as_str())),
            ("actor", filter.actor.as_deref()),
            ("study_uid", filter.study_uid.as_deref()),
            ("patient_id", filter.patient_id.as_deref()),
        ] {
            if let Some(value) = value {
                texts.push(value);
                sql.push_str(&format!(" AND {column} = ${next}"));
                next += 1;
            }
        }
        for (condition, value) in [
            ("at >=", filter.since),
            ("at <", filter.until),
            ("id <", filter.before_id),
        ] {
            if let Some(value) = value {
                numbers.push(value);
                sql.push_str(&format!(" AND {condition} ${next}"));
                next += 1;
            }
        }
        let limit = match filter.limit {
            0 => 100,
            n => n.min(1000),
        };
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let mut query = sqlx::query_as(&sql);
        for value in texts {
            query = query.bind(value);
        }
        for value in numbers {
            query = query.bind(value);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }
}
