//! SQL text both dialects accept. Placeholders are `$n` and always appear in increasing
//! order, because SQLite numbers `$n` parameters by first appearance.

pub const FIND_PATIENT: &str = "SELECT id FROM patient WHERE patient_id = $1 AND issuer = $2";

pub const INSERT_PATIENT: &str = "INSERT INTO patient \
    (patient_id, issuer, patient_name, patient_name_norm, birth_date, sex, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

pub const FIND_STUDY: &str = "SELECT s.id, s.patient_fk, p.patient_id \
    FROM study s JOIN patient p ON p.id = s.patient_fk WHERE s.study_uid = $1";

pub const INSERT_STUDY: &str = "INSERT INTO study \
    (study_uid, patient_fk, study_date, study_time, accession_number, study_id, description, \
     referring_physician, referring_physician_norm, received_at, updated_at, last_accessed_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";

pub const FIND_SERIES: &str = "SELECT se.id, se.study_fk, st.study_uid \
    FROM series se JOIN study st ON st.id = se.study_fk WHERE se.series_uid = $1";

pub const INSERT_SERIES: &str = "INSERT INTO series \
    (series_uid, study_fk, modality, series_number, description, body_part, source_ae, \
     received_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

/// Counts a new series and adds its modality ($1) to the backslash-separated list unless it
/// is already there.
pub const STUDY_ADD_SERIES: &str = "UPDATE study SET num_series = num_series + 1, modalities = \
    CASE WHEN $1 = '' THEN modalities WHEN modalities = '' THEN $1 \
    WHEN ('\\' || modalities || '\\') LIKE ('%\\' || $1 || '\\%') ESCAPE '!' THEN modalities \
    ELSE modalities || '\\' || $1 END WHERE id = $2";

pub const FIND_INSTANCE: &str = "SELECT i.id, i.series_fk, se.series_uid \
    FROM instance i JOIN series se ON se.id = i.series_fk WHERE i.sop_uid = $1";

/// Multi-row insert: HEAD, `(…), (…)` with 7 values per instance, TAIL. Instances already
/// stored return no row.
pub const INSERT_INSTANCES_HEAD: &str = "INSERT INTO instance \
    (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax, number_of_frames, \
     received_at) VALUES";
pub const INSERT_INSTANCES_TAIL: &str = "ON CONFLICT (sop_uid) DO NOTHING RETURNING id, sop_uid";

/// Multi-row insert: HEAD, then `(…), (…)` with 6 values per file (status defaults to OK).
pub const INSERT_FILES_HEAD: &str = "INSERT INTO file \
    (instance_fk, filesystem_fk, path, size_bytes, sha256, created_at) VALUES";

pub const INSERT_METADATA_HEAD: &str =
    "INSERT INTO instance_metadata (instance_fk, metadata) VALUES";
pub const INSERT_METADATA_TAIL: &str =
    "ON CONFLICT (instance_fk) DO UPDATE SET metadata = excluded.metadata";

/// Stored metadata of the instances under a study, optionally one series or one instance:
/// `$1` study UID, `$2` series UID or '', `$3` SOP Instance UID or ''.
pub const SELECT_METADATA: &str = "SELECT st.study_uid, se.series_uid, i.sop_uid, m.metadata \
    FROM instance_metadata m JOIN instance i ON i.id = m.instance_fk \
    JOIN series se ON se.id = i.series_fk JOIN study st ON st.id = se.study_fk \
    WHERE st.study_uid = $1 AND ($2 = '' OR se.series_uid = $2) AND ($3 = '' OR i.sop_uid = $3) \
    ORDER BY se.series_number, se.id, i.instance_number, i.id";

pub const FIND_FILE_OF_INSTANCE: &str = "SELECT id, filesystem_fk, path, size_bytes, sha256 \
    FROM file WHERE instance_fk = $1 AND status = 'OK'";

pub const REPLACE_FILE: &str = "UPDATE file SET filesystem_fk = $1, path = $2, size_bytes = $3, \
    sha256 = $4, created_at = $5 WHERE id = $6";

/// Which counters a batch adds to: the series and the study tables have the same columns.
#[derive(Clone, Copy)]
pub enum CountedTable {
    Series,
    Study,
}

/// One UPDATE adding (instances, bytes) to `rows` rows of `table`: binds are `rows` triples
/// (id, instances, bytes), then the update time. One statement per table and batch instead of
/// one per series and study, because every statement is a round trip to the database (for
/// SQLite, to sqlx's worker thread and back). The casts tell PostgreSQL the VALUES' types.
/// Placeholders are numbered from `$first`.
pub fn add_counts(table: CountedTable, rows: usize, first: usize) -> String {
    let table = match table {
        CountedTable::Series => "series",
        CountedTable::Study => "study",
    };
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let first = first + row * 3;
            format!(
                "(CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                first,
                first + 1,
                first + 2
            )
        })
        .collect();
    format!(
        "WITH delta (id, instances, bytes) AS (VALUES {}) \
        UPDATE {table} SET num_instances = {table}.num_instances + delta.instances, \
        size_bytes = {table}.size_bytes + delta.bytes, updated_at = ${}, availability = 'ONLINE' \
        FROM delta WHERE {table}.id = delta.id",
        values.join(", "),
        first + rows * 3
    )
}

pub const SELECT_FILESYSTEMS: &str =
    "SELECT id, group_name, path, mode, min_free_bytes FROM filesystem ORDER BY id";

pub const UPSERT_FILESYSTEM: &str =
    "INSERT INTO filesystem (group_name, path, mode, min_free_bytes) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (path) DO UPDATE SET group_name = excluded.group_name, \
    mode = excluded.mode, min_free_bytes = excluded.min_free_bytes, from_config = 1";

pub const SELECT_STUDY_COLUMNS: &str = "SELECT s.study_uid, p.patient_id, p.issuer, \
    p.patient_name, p.birth_date, p.sex, s.study_date, s.study_time, s.accession_number, \
    s.study_id, s.description, s.referring_physician, s.modalities, s.num_series, \
    s.num_instances, s.size_bytes, s.availability, s.received_at, s.updated_at, \
    s.last_accessed_at FROM study s JOIN patient p ON p.id = s.patient_fk";

pub fn select_study() -> String {
    format!("{SELECT_STUDY_COLUMNS} WHERE s.study_uid = $1")
}

pub const SELECT_SERIES_OF_STUDY: &str = "SELECT se.series_uid, se.modality, se.series_number, \
    se.description, se.body_part, se.source_ae, se.num_instances, se.size_bytes, se.availability \
    FROM series se JOIN study st ON st.id = se.study_fk WHERE st.study_uid = $1 \
    ORDER BY se.series_number, se.series_uid";

const LOCATION_COLUMNS: &str = "SELECT i.sop_uid, i.sop_class_uid, se.series_uid, st.study_uid, \
    i.instance_number, i.transfer_syntax, i.number_of_frames, fs.id AS filesystem_id, \
    fs.path AS filesystem_path, f.path AS rel_path, f.size_bytes, f.sha256 \
    FROM instance i JOIN series se ON se.id = i.series_fk JOIN study st ON st.id = se.study_fk \
    JOIN patient p ON p.id = st.patient_fk \
    JOIN file f ON f.instance_fk = i.id AND f.status = 'OK' \
    JOIN filesystem fs ON fs.id = f.filesystem_fk";

pub fn select_location_by_sop() -> String {
    format!("{LOCATION_COLUMNS} WHERE i.sop_uid = $1")
}

pub fn select_locations_of_study() -> String {
    format!("{LOCATION_COLUMNS} WHERE st.study_uid = $1 ORDER BY se.series_number, i.instance_number, i.sop_uid")
}

pub const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM patient), (SELECT COUNT(*) FROM study), \
    (SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instance), (SELECT COUNT(*) FROM file)";

pub const UPSERT_AE: &str = "INSERT INTO ae_peer \
    (ae_title, host, port, can_query, can_retrieve, can_store, description, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ae_title) DO UPDATE SET \
    host = excluded.host, port = excluded.port, can_query = excluded.can_query, \
    can_retrieve = excluded.can_retrieve, can_store = excluded.can_store, \
    description = excluded.description";

const AE_COLUMNS: &str =
    "SELECT ae_title, host, port, can_query, can_retrieve, can_store, description FROM ae_peer";

pub fn select_aes() -> String {
    format!("{AE_COLUMNS} ORDER BY ae_title")
}

pub fn select_ae() -> String {
    format!("{AE_COLUMNS} WHERE ae_title = $1")
}

pub const DELETE_AE: &str = "DELETE FROM ae_peer WHERE ae_title = $1";

/// `$first, $first+1, …` (`count` placeholders).
pub fn placeholder_list(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    list.join(", ")
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` placeholders each (multi-row INSERT).
pub fn values_placeholders(rows: usize, columns: usize) -> String {
    values_placeholders_from(1, rows, columns)
}

/// [`values_placeholders`] numbered from `$first`.
pub fn values_placeholders_from(first: usize, rows: usize, columns: usize) -> String {
    let list: Vec<String> = (0..rows)
        .map(|row| format!("({})", placeholder_list(first + row * columns, columns)))
        .collect();
    list.join(", ")
}

/// Instances to retrieve: `column IN (…)` with the level's unique key column.
pub fn select_locations_where_in(column: &str, count: usize) -> String {
    format!(
        "{LOCATION_COLUMNS} WHERE {column} IN ({}) ORDER BY st.id, se.series_number, se.id, i.instance_number, i.id",
        placeholder_list(1, count)
    )
}

pub fn touch_studies(count: usize) -> String {
    format!(
        "UPDATE study SET last_accessed_at = $1 WHERE study_uid IN ({})",
        placeholder_list(2, count)
    )
}

/// ` AND <alias>.modality IN (…) AND <alias>.source_ae IN (…)` for the non-empty lists of a
/// rule's series filters, numbering placeholders from `first`; returns the clause and the
/// values to bind, in order.
pub fn series_filter(
    alias: &str,
    modalities: &[String],
    calling_aes: &[String],
    first: usize,
) -> (String, Vec<String>) {
    let mut clause = String::new();
    let mut binds: Vec<String> = Vec::new();
    for (column, values) in [("modality", modalities), ("source_ae", calling_aes)] {
        if values.is_empty() {
            continue;
        }
        clause.push_str(&format!(
            " AND {alias}.{column} IN ({})",
            placeholder_list(first + binds.len(), values.len())
        ));
        binds.extend(values.iter().cloned());
    }
    (clause, binds)
}

/// A backslash-separated list column (modalities, calling AE titles) as its values.
pub fn split_list(text: String) -> Vec<String> {
    text.split('\\')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_in_increasing_order() {
        assert_eq!(
            super::values_placeholders(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(super::placeholder_list(2, 3), "$2, $3, $4");
    }
}
