#!/usr/bin/env python3
"""Retrieval look-ups on a large SQLite index with the old status indexes and with the
partial indexes of migrations 0013/0014, on the same rows.

    cargo build --release -p archive-core --example bulk_load
    target/release/examples/bulk_load sqlite://$PWD/target/big.db 2000 100
    bench/status_index_plans.py target/big.db

Adds one ARCHIVED pack per study (all its instances as members) if there are none, then times
the ONLINE locations of a study (what every C-MOVE, C-GET and WADO-RS of a study starts with),
its NEARLINE locations (the same for a study on the target only) and the availability
recompute of one instance level, first with `file_status_idx` and `pack_status_idx` as
migrations 0003/0004 made them, then with the partial indexes that replaced them. The SQL is
the index's own (archive-core/src/index/query.rs and retention.rs), without the columns that
do not change the plan. The database is left with the partial indexes."""
import sqlite3
import sys
import time

ONLINE = """SELECT i.sop_uid, f.path FROM instance i JOIN series se ON se.id = i.series_fk
 JOIN study st ON st.id = se.study_fk JOIN patient p ON p.id = st.patient_fk
 JOIN file f ON f.instance_fk = i.id AND f.status = 'OK' JOIN filesystem fs ON fs.id = f.filesystem_fk
 WHERE st.study_uid = ? ORDER BY se.series_number, i.instance_number, i.sop_uid"""
NEARLINE = """SELECT i.sop_uid, pm.member_path FROM instance i JOIN series se ON se.id = i.series_fk
 JOIN study st ON st.id = se.study_fk JOIN patient p ON p.id = st.patient_fk
 JOIN pack_member pm ON pm.instance_fk = i.id JOIN pack pk ON pk.id = pm.pack_fk AND pk.status = 'ARCHIVED'
 JOIN nearline_target t ON t.id = pk.target_fk WHERE st.study_uid IN (?)
 AND NOT EXISTS (SELECT 1 FROM file f WHERE f.instance_fk = i.id AND f.status = 'OK')
 ORDER BY se.series_number, se.series_uid, i.instance_number, i.sop_uid, pk.id DESC"""
AVAILABILITY = """UPDATE instance SET availability = CASE
 WHEN EXISTS (SELECT 1 FROM file f WHERE f.instance_fk = instance.id AND f.status = 'OK') THEN 'ONLINE'
 WHEN EXISTS (SELECT 1 FROM pack_member pm JOIN pack p ON p.id = pm.pack_fk
   WHERE pm.instance_fk = instance.id AND p.status = 'ARCHIVED') THEN 'NEARLINE' ELSE 'OFFLINE' END
 WHERE series_fk IN (SELECT se.id FROM series se JOIN study s ON s.id = se.study_fk WHERE s.study_uid = ?)"""
OLD = """DROP INDEX IF EXISTS file_deleting_idx; DROP INDEX IF EXISTS pack_to_archive_idx;
 CREATE INDEX IF NOT EXISTS file_status_idx ON file (status); CREATE INDEX IF NOT EXISTS pack_status_idx ON pack (status);"""
NEW = """DROP INDEX IF EXISTS file_status_idx; DROP INDEX IF EXISTS pack_status_idx;
 CREATE INDEX IF NOT EXISTS file_deleting_idx ON file (instance_fk) WHERE status = 'DELETING';
 CREATE INDEX IF NOT EXISTS pack_to_archive_idx ON pack (target_fk) WHERE status = 'TO_ARCHIVE';"""


def add_packs(db):
    if db.execute("SELECT COUNT(*) FROM pack").fetchone()[0]:
        return
    db.execute("BEGIN")
    target = db.execute("INSERT INTO nearline_target (name, kind, spec, from_config, created_at, updated_at) "
                        "VALUES ('bench', 's3', '{}', 0, 0, 0) RETURNING id").fetchone()[0]
    for (study,) in db.execute("SELECT id FROM study").fetchall():
        pack = db.execute("INSERT INTO pack (study_fk, target_fk, object_key, status, created_at, updated_at) "
                          "VALUES (?, ?, ?, 'ARCHIVED', 0, 0) RETURNING id", (study, target, f"p{study}")).fetchone()[0]
        db.execute("INSERT INTO pack_member (pack_fk, instance_fk, member_path, data_offset, size_bytes, sha256) "
                   "SELECT ?, i.id, 'm' || i.id, 0, 1, '' FROM instance i JOIN series se ON se.id = i.series_fk "
                   "WHERE se.study_fk = ?", (pack, study))
    db.execute("COMMIT")


def timed(db, studies):
    """Milliseconds per study for each look-up, over the given studies."""
    figures = {}
    for name, sql in (("ONLINE locations", ONLINE), ("NEARLINE locations", NEARLINE)):
        started = time.perf_counter()
        for uid in studies:
            db.execute(sql, (uid,)).fetchall()
        figures[name] = (time.perf_counter() - started) * 1000 / len(studies)
    db.execute("BEGIN")
    started = time.perf_counter()
    for uid in studies:
        db.execute(AVAILABILITY, (uid,))
    figures["availability recompute"] = (time.perf_counter() - started) * 1000 / len(studies)
    db.execute("ROLLBACK")
    return figures


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    add_packs(db)
    counts = [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("study", "instance", "pack")]
    uids = [r[0] for r in db.execute("SELECT study_uid FROM study ORDER BY id")]
    sample = uids[:: max(1, len(uids) // 10)][:10]
    print(f"{counts[0]} studies, {counts[1]} instances, {counts[2]} ARCHIVED packs; {len(sample)} studies timed")
    results = {}
    for label, ddl in (("status indexes (0003/0004)", OLD), ("partial indexes (0013/0014)", NEW)):
        db.executescript(ddl)
        results[label] = timed(db, sample)
    print("| look-up, per study | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in next(iter(results.values())):
        print(f"| {name} | " + " | ".join(f"{r[name]:.2f} ms" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
