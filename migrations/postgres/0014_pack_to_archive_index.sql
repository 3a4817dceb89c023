-- pack_status_idx indexed every pack by its status. SQLite (never ANALYZEd here) takes an
-- index on a column compared with a constant as selective, so queries that join packs to one
-- study's instances with `status = 'ARCHIVED'` walked every ARCHIVED pack in the archive and
-- its members instead of the study's own (the NEARLINE location query of every retrieval,
-- the availability recompute: once per instance). The only selective look-up by status alone
-- is verify-sync's search for packs waiting to be verified, which a partial index serves; the
-- fixity scheduler's look-up of ARCHIVED packs reads nearly every row anyway.
DROP INDEX pack_status_idx;
CREATE INDEX pack_to_archive_idx ON pack (target_fk) WHERE status = 'TO_ARCHIVE';
