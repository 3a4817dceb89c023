-- Series and study counters (num_instances, size_bytes) are no longer rewritten by every
-- group-commit batch (see the SQLite migration of the same number for why). The rows hold
-- the counts of the instances up to counts_folded.instance_id; the instances above it are
-- counted when read (index/counts.rs) and folded into the rows by the ingest writer every
-- half second. PostgreSQL hands out ids before commit, so an id below the mark could still
-- commit later: every ingest batch holds an advisory lock in shared mode and the fold takes
-- it exclusively (index/counts.rs), so the mark never passes an uncommitted instance.
CREATE TABLE counts_folded (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id BIGINT  NOT NULL
);
-- Every existing instance is already in the counters.
INSERT INTO counts_folded (id, instance_id) SELECT 1, COALESCE(MAX(id), 0) FROM instance;

-- What the instance adds to its series' and study's size_bytes (the object's size when it
-- was indexed, changed when a duplicate replaces its file). 0 for instances indexed before
-- this migration: their bytes are in the counters already and the column is not read for them.
-- A constant default: PostgreSQL adds the column without rewriting the table. The default is
-- then dropped, so that a node of an older version still running (it does not know the
-- column) fails to insert instances instead of counting them twice: its batches still add
-- to the counters themselves. Stop every node before this migration (README, Upgrading).
ALTER TABLE instance ADD COLUMN size_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instance ALTER COLUMN size_bytes DROP DEFAULT;

-- The unfolded instances of one series, "series_fk = ? AND id > ?", as one index range
-- (SQLite's index has the rowid as its last column already).
CREATE INDEX instance_series_id_idx ON instance (series_fk, id);
DROP INDEX instance_series_idx;
