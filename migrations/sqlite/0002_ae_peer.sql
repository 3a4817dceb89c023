-- DICOM peers Strata talks to: C-MOVE destinations, and who may query or retrieve.
CREATE TABLE ae_peer (
    id           INTEGER PRIMARY KEY,
    ae_title     TEXT    NOT NULL UNIQUE,
    host         TEXT    NOT NULL,
    port         INTEGER NOT NULL,
    can_query    INTEGER NOT NULL DEFAULT 1,
    can_retrieve INTEGER NOT NULL DEFAULT 1,
    can_store    INTEGER NOT NULL DEFAULT 1,
    description  TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL
);
