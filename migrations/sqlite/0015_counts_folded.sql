-- Series and study counters (num_instances, size_bytes) are no longer rewritten by every
-- group-commit batch: on SQLite that was two to three more dirty pages (the series and study
-- rows) per commit, about a quarter of what the index wrote per instance. The rows now hold
-- the counts of the instances up to counts_folded.instance_id; the instances above it are
-- counted when read (index/counts.rs) and folded into the rows by the ingest writer every
-- half second. Instances are only ever added with increasing ids under SQLite's single
-- writer, so "id above the mark" is exactly "not yet folded".
CREATE TABLE counts_folded (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id INTEGER NOT NULL
);
-- Every existing instance is already in the counters.
INSERT INTO counts_folded (id, instance_id) SELECT 1, COALESCE(MAX(id), 0) FROM instance;

-- What the instance adds to its series' and study's size_bytes (the object's size when it
-- was indexed, changed when a duplicate replaces its file). 0 for instances indexed before
-- this migration: their bytes are in the counters already and the column is not read for them.
ALTER TABLE instance ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0;

-- The unfolded instances of one series are found through instance_series_idx: SQLite keeps
-- the rowid (= id) as the index's last column, so "series_fk = ? AND id > ?" is a range of it.
