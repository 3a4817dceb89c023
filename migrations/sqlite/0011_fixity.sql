-- Fixity: every scheduled re-read of an ARCHIVED pack or re-hash of an ONLINE file, with its
-- result. Exactly one of pack_fk / file_fk is set. A damaged ONLINE file's row becomes
-- DAMAGED (retrievals and deletions only use OK rows) and stays for the record.
CREATE TABLE fixity_check (
    id         INTEGER PRIMARY KEY,
    pack_fk    INTEGER REFERENCES pack (id),
    file_fk    INTEGER,
    checked_at INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    ok         INTEGER NOT NULL,
    detail     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX fixity_pack_idx ON fixity_check (pack_fk, checked_at);
CREATE INDEX fixity_file_idx ON fixity_check (file_fk, checked_at);
CREATE INDEX fixity_checked_idx ON fixity_check (checked_at);
