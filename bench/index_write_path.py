#!/usr/bin/env python3
"""The index write path of live ingest without sqlx: the statements one group-commit batch of
`archive-core/src/index/ingest_tx.rs` sends on SQLite (BEGIN IMMEDIATE with the multi-row
INSERT of the instances, then the file rows, the series and studies marked ONLINE where they
were not, and COMMIT as one script), and the fold of `index/counts.rs` every 500 ms, called straight into the SQLite C library in this thread by Python's sqlite3 module,
with the rows of `archive-core/examples/bulk_load.rs` and the same pragmas.

    index_write_path.py DB_FILE STUDIES INSTANCES_PER_STUDY BATCH

Prints the same per-instance figures as bulk_load: what a writer that calls SQLite directly
(no worker thread, no async hand-off) spends, to compare with sqlx's. The interpreter's own
work is included, so the difference is a lower bound of what the hand-offs cost."""
import glob
import os
import sys
import time

import sqlite3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRAGMAS = ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
           "PRAGMA busy_timeout = 30000", "PRAGMA cache_size = -8192"]


def costs():
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    switches = 0
    for task in glob.glob("/proc/self/task/*/status"):
        with open(task) as f:
            switches += sum(int(l.split()[1]) for l in f if "ctxt_switches" in l)
    with open("/proc/self/io") as f:
        written = next(int(l.split()[1]) for l in f if l.startswith("write_bytes"))
    return ticks / 100.0, switches, written


def fold(db):
    """index/counts.rs's fold: the instances above the mark into the counters, the mark moved."""
    db.execute("BEGIN IMMEDIATE")
    old, new = db.execute("SELECT (SELECT instance_id FROM counts_folded), "
                          "(SELECT COALESCE(MAX(id), 0) FROM instance)").fetchone()
    for table, parent in (("series", "ui.series_fk"), ("study", "us.study_fk")):
        db.execute(f"UPDATE {table} SET num_instances = {table}.num_instances + d.instances, "
                   f"size_bytes = {table}.size_bytes + d.bytes, updated_at = CASE WHEN d.latest > "
                   f"{table}.updated_at THEN d.latest ELSE {table}.updated_at END FROM (SELECT {parent} AS id, "
                   "COUNT(*) AS instances, COALESCE(SUM(ui.size_bytes), 0) AS bytes, MAX(ui.received_at) AS latest "
                   "FROM instance ui JOIN series us ON us.id = ui.series_fk WHERE ui.id > ? AND ui.id <= ? "
                   f"GROUP BY {parent}) d WHERE {table}.id = d.id", (old, new))
    db.execute("UPDATE counts_folded SET instance_id = ? WHERE instance_id = ?", (new, old))
    db.execute("COMMIT")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    path, studies, per_study, batch = sys.argv[1], *map(int, sys.argv[2:5])
    for stale in glob.glob(path + "*"):
        os.remove(stale)
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(pragma)
    for migration in sorted(glob.glob(os.path.join(ROOT, "migrations/sqlite/*.sql"))):
        with open(migration) as f:
            db.executescript(f.read())
    fs = db.execute("INSERT INTO filesystem (group_name, path, mode, min_free_bytes) "
                    "VALUES ('BULK', '/nonexistent/bulk', 'ro', 0) RETURNING id").fetchone()[0]
    series_ids = {}

    def series_of(study, series):
        key = (study, series)
        if key not in series_ids:
            patient = f"BULK{study // 2:06}"
            row = db.execute("SELECT id FROM patient WHERE patient_id = ? AND issuer = ''", (patient,)).fetchone()
            pid = row[0] if row else db.execute(
                "INSERT INTO patient (patient_id, issuer, patient_name, patient_name_norm, birth_date, sex, "
                "created_at) VALUES (?, '', ?, ?, '19600101', 'F', 0) RETURNING id",
                (patient, f"Bulk^Patient{study // 2:06}", f"BULK^PATIENT{study // 2:06}")).fetchone()[0]
            row = db.execute("SELECT id FROM study WHERE study_uid = ?", (f"2.25.77.{study}",)).fetchone()
            sid = row[0] if row else db.execute(
                "INSERT INTO study (study_uid, patient_fk, study_date, study_time, accession_number, study_id, "
                "description, referring_physician, referring_physician_norm, received_at, updated_at, "
                "last_accessed_at) VALUES (?, ?, '20150101', '120000', ?, '1', 'Bulk study', 'Referrer^Bulk', "
                "'REFERRER^BULK', 0, 0, 0) RETURNING id", (f"2.25.77.{study}", pid, f"ACC{study:08}")).fetchone()[0]
            seid = db.execute(
                "INSERT INTO series (series_uid, study_fk, modality, series_number, description, body_part, "
                "source_ae, received_at, updated_at) VALUES (?, ?, 'CT', ?, '', 'CHEST', 'BULK', 0, 0) RETURNING id",
                (f"2.25.77.{study}.{series}", sid, series + 1)).fetchone()[0]
            db.execute("UPDATE study SET num_series = num_series + 1 WHERE id = ?", (sid,))
            series_ids[key] = (seid, sid)
        return series_ids[key]

    rows = [(s, i, i * 4 // max(per_study, 1)) for s in range(studies) for i in range(per_study)]
    before, started, stored = costs(), time.time(), 0
    folded_at = 0.0
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        db.execute("BEGIN IMMEDIATE")
        hierarchy = [series_of(s, se) for s, _, se in chunk]
        values = ", ".join(["(?, ?, '1.2.840.10008.5.1.4.1.1.2', ?, '1.2.840.10008.1.2.1', NULL, ?, ?)"]
                           * len(chunk))
        params = []
        for (s, i, se), (seid, _) in zip(chunk, hierarchy):
            params += [f"2.25.77.{s}.{se}.{i}", seid, i + 1, 1_700_000_000_000, 16384]
        ids = dict(db.execute(
            "INSERT INTO instance (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax, "
            f"number_of_frames, received_at, size_bytes) VALUES {values} ON CONFLICT (sop_uid) DO NOTHING "
            "RETURNING sop_uid, id", params).fetchall())
        files, touched = [], {"series": set(), "study": set()}
        for (s, i, se), (seid, sid) in zip(chunk, hierarchy):
            files += [ids[f"2.25.77.{s}.{se}.{i}"], fs, f"bulk/{s}/{i}.dcm", 16384, "", 1_700_000_000_000]
            touched["series"].add(seid)
            touched["study"].add(sid)
        db.execute("INSERT INTO file (instance_fk, filesystem_fk, path, size_bytes, sha256, created_at) VALUES "
                   + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)), files)
        for table, ids_of in touched.items():
            db.execute(f"UPDATE {table} SET availability = 'ONLINE' WHERE availability <> 'ONLINE' "
                       f"AND id IN ({', '.join('?' * len(ids_of))})", sorted(ids_of))
        db.execute("COMMIT")
        stored += len(ids)
        if time.time() - folded_at >= 0.5:
            fold(db)
            folded_at = time.time()
    elapsed = time.time() - started
    after = costs()
    cpu, switches, written = (a - b for a, b in zip(after, before))
    print(f"loaded {studies} studies / {stored} instances in {elapsed:.1f} s")
    print(f"per instance (batches of {batch}): {cpu * 1000 / stored:.3f} ms CPU, "
          f"{switches / stored:.1f} thread switches, {written / stored:.0f} bytes written")


if __name__ == "__main__":
    main()
