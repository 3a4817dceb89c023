//! SQL for a [`FindQuery`]: every value bound, never spliced into the text.
//!
//! Wildcards: PostgreSQL's LIKE is case-sensitive, SQLite's is not (for ASCII), so SQLite uses
//! GLOB, which is. Person names are matched on their upper-case copy, so they are
//! case-insensitive on both.

use super::Dialect;
use crate::query::{Attr, FindQuery, Level, Matcher, ValueKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

pub(crate) struct FindSql {
    pub text: String,
    pub binds: Vec<Bind>,
    /// The attribute of each selected column, in order.
    pub columns: Vec<Attr>,
}

/// The attributes a query returns: the ones asked for plus the unique keys from the top down
/// to its level (a retrieval needs them, and PS3.4 requires the level's own).
pub(crate) fn returned_attributes(query: &FindQuery) -> Vec<Attr> {
    let mut attrs: Vec<Attr> = query.keys.iter().map(|k| k.attr).collect();
    for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
        if level <= query.level && (level == query.level || level > Level::Patient) {
            attrs.push(Attr::unique_key(level));
        }
    }
    attrs.sort();
    attrs.dedup();
    attrs
}

pub(crate) fn build_find_sql(query: &FindQuery, dialect: Dialect) -> FindSql {
    let level = query.level;
    let columns = returned_attributes(query);
    let select: Vec<String> = columns
        .iter()
        .map(|attr| format!("CAST({} AS TEXT)", attr.column(level)))
        .collect();
    let from = match level {
        Level::Patient => "patient p",
        Level::Study => "study st JOIN patient p ON p.id = st.patient_fk",
        Level::Series => {
            "series se JOIN study st ON st.id = se.study_fk JOIN patient p ON p.id = st.patient_fk"
        }
        Level::Image => {
            "instance i JOIN series se ON se.id = i.series_fk JOIN study st ON st.id = se.study_fk \
             JOIN patient p ON p.id = st.patient_fk"
        }
    };
    let mut builder = Conditions {
        dialect,
        binds: Vec::new(),
        clauses: Vec::new(),
    };
    for key in &query.keys {
        builder.add(key.attr, level, &key.matcher);
    }
    let mut text = format!("SELECT {} FROM {}", select.join(", "), from);
    if !builder.clauses.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&builder.clauses.join(" AND "));
    }
    // Paged answers (QIDO-RS offset) need a stable order, or pages would overlap: the
    // level's row id, which is insertion order. C-FIND has no paging and no ORDER BY: with one,
    // PostgreSQL walks the primary key in order and filters (10,000 studies for two matches)
    // instead of using the selective index.
    if query.offset.is_some() {
        let alias = match level {
            Level::Patient => "p",
            Level::Study => "st",
            Level::Series => "se",
            Level::Image => "i",
        };
        text.push_str(&format!(" ORDER BY {alias}.id"));
    }
    // One more row than asked, so the caller can tell that the answer was limited.
    text.push_str(&format!(" LIMIT {}", query.limit.saturating_add(1)));
    if let Some(offset) = query.offset {
        text.push_str(&format!(" OFFSET {offset}"));
    }
    FindSql {
        text,
        binds: builder.binds,
        columns,
    }
}

struct Conditions {
    dialect: Dialect,
    binds: Vec<Bind>,
    clauses: Vec<String>,
}

impl Conditions {
    fn placeholder(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    fn add(&mut self, attr: Attr, level: Level, matcher: &Matcher) {
        let kind = attr.kind();
        let column = attr.match_column(level);
        let clause = match (matcher, kind) {
            (Matcher::Universal, _) | (_, ValueKind::Computed) => return,
            (Matcher::Single(value), ValueKind::ModalityList) => self.modality(column, value),
            (Matcher::AnyOf(values), ValueKind::ModalityList) => {
                let any: Vec<String> = values.iter().map(|v| self.modality(column, v)).collect();
                format!("({})", any.join(" OR "))
            }
            (Matcher::Single(value), ValueKind::Integer) => {
                let n = value.parse().unwrap_or(i64::MIN);
                format!("{column} = {}", self.placeholder(Bind::Int(n)))
            }
            (Matcher::Single(value), _) => {
                format!("{column} = {}", self.placeholder(Bind::Text(value.clone())))
            }
            (Matcher::AnyOf(values), _) => {
                let list: Vec<String> = values
                    .iter()
                    .map(|v| self.placeholder(Bind::Text(v.clone())))
                    .collect();
                format!("{column} IN ({})", list.join(", "))
            }
            (Matcher::Wildcard(pattern), _) => self.wildcard(column, pattern),
            (Matcher::Range { from, to }, _) => {
                let mut parts = Vec::new();
                if let Some(from) = from {
                    parts.push(format!(
                        "{column} >= {}",
                        self.placeholder(Bind::Text(from.clone()))
                    ));
                }
                if let Some(to) = to {
                    parts.push(format!(
                        "{column} <= {}",
                        self.placeholder(Bind::Text(to.clone()))
                    ));
                }
                format!("({})", parts.join(" AND "))
            }
        };
        self.clauses.push(clause);
    }

    fn wildcard(&mut self, column: &str, pattern: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let glob = escape_glob_brackets(pattern);
                format!("{column} GLOB {}", self.placeholder(Bind::Text(glob)))
            }
            Dialect::Postgres => {
                let like: String = pattern
                    .chars()
                    .map(|c| match c {
                        '*' => "%".to_string(),
                        '?' => "_".to_string(),
                        '%' | '_' | '!' => format!("!{c}"),
                        other => other.to_string(),
                    })
                    .collect();
                format!(
                    "{column} LIKE {} ESCAPE '!'",
                    self.placeholder(Bind::Text(like))
                )
            }
        }
    }

    /// Modalities are kept as `CT\SR`; one matches when it is an element of that list.
    fn modality(&mut self, column: &str, value: &str) -> String {
        let list = format!("('\\' || {column} || '\\')");
        let element = format!("\\{value}\\");
        match self.dialect {
            Dialect::Sqlite => {
                let glob = escape_glob_brackets(&element);
                format!(
                    "{list} GLOB {}",
                    self.placeholder(Bind::Text(format!("*{glob}*")))
                )
            }
            Dialect::Postgres => format!(
                "position({} in {list}) > 0",
                self.placeholder(Bind::Text(element.replace(['*', '?'], "")))
            ),
        }
    }
}

/// GLOB treats `[` as the start of a character class; DICOM wildcards are only `*` and `?`.
fn escape_glob_brackets(pattern: &str) -> String {
    pattern.replace('[', "[[]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::QueryKey;

    fn query(level: Level, keys: Vec<(Attr, Matcher)>) -> FindQuery {
        FindQuery {
            level,
            keys: keys
                .into_iter()
                .map(|(attr, matcher)| QueryKey { attr, matcher })
                .collect(),
            limit: 10,
            offset: None,
        }
    }

    #[test]
    fn values_are_bound_not_spliced() {
        let q = query(
            Level::Study,
            vec![(Attr::PatientId, Matcher::Single("x' OR 1=1 --".into()))],
        );
        let sql = build_find_sql(&q, Dialect::Postgres);
        assert!(!sql.text.contains("OR 1=1"));
        assert_eq!(sql.binds, vec![Bind::Text("x' OR 1=1 --".into())]);
        assert!(sql.text.ends_with("LIMIT 11"));
    }

    #[test]
    fn wildcard_translation_per_dialect() {
        let q = query(
            Level::Study,
            vec![(
                Attr::StudyDescription,
                Matcher::Wildcard("50%_ch?st*".into()),
            )],
        );
        assert_eq!(
            build_find_sql(&q, Dialect::Postgres).binds,
            vec![Bind::Text("50!%!_ch_st%".into())]
        );
        assert_eq!(
            build_find_sql(&q, Dialect::Sqlite).binds,
            vec![Bind::Text("50%_ch?st*".into())]
        );
    }

    #[test]
    fn unique_keys_are_always_returned() {
        let q = query(Level::Series, vec![(Attr::Modality, Matcher::Universal)]);
        assert_eq!(
            returned_attributes(&q),
            vec![
                Attr::StudyInstanceUid,
                Attr::SeriesInstanceUid,
                Attr::Modality
            ]
        );
        let q = query(Level::Patient, vec![]);
        assert_eq!(returned_attributes(&q), vec![Attr::PatientId]);
    }
}
