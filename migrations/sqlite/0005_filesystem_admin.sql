-- Filesystems can be added and changed at run time (REST API, admin UI). Those from the config
-- file are re-applied at every start, so the API refuses to change them (it would not stick).
-- Every filesystem so far came from the config file.
ALTER TABLE filesystem ADD COLUMN from_config INTEGER NOT NULL DEFAULT 1;
