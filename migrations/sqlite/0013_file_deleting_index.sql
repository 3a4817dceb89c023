-- file_status_idx indexed every file by its status, although the only selective look-up by
-- status is the start-up search for deletions a crash interrupted (status = 'DELETING'); the
-- fixity scheduler's look-up of OK files reads nearly every row anyway. Every ingested file
-- is 'OK', so that index took one more page write per group-commit batch for nothing. A
-- partial index holds only the DELETING rows, which are few and short-lived.
DROP INDEX file_status_idx;
CREATE INDEX file_deleting_idx ON file (instance_fk) WHERE status = 'DELETING';
