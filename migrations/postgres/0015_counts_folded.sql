-- Series and study counters (num_instances, size_bytes) are no longer rewritten by every
-- group-commit batch (see the SQLite migration of the same number for why). The rows hold
-- the counts of the instances up to counts_folded.instance_id; the instances above it are
-- counted when read (index/counts.rs) and folded into the rows by the ingest writer every
-- half second. PostgreSQL hands out ids before commit, so an id below the mark could still
-- commit later: the fold takes a lock on instance that waits for every open insert (see
-- index/counts.rs), so the mark never passes an uncommitted instance.
CREATE TABLE counts_folded (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id BIGINT  NOT NULL
);
-- Every existing instance is already in the counters.
INSERT INTO counts_folded (id, instance_id) SELECT 1, COALESCE(MAX(id), 0) FROM instance;

-- What the instance adds to its series' and study's size_bytes (the object's size when it
-- was indexed, changed when a duplicate replaces its file). 0 for instances indexed before
-- this migration: their bytes are in the counters already and the column is not read for them.
-- A constant default: PostgreSQL adds the column without rewriting the table.
ALTER TABLE instance ADD COLUMN size_bytes BIGINT NOT NULL DEFAULT 0;

-- The unfolded instances of one series, "series_fk = ? AND id > ?", as one index range
-- (SQLite's index has the rowid as its last column already).
CREATE INDEX instance_series_id_idx ON instance (series_fk, id);
DROP INDEX instance_series_idx;
