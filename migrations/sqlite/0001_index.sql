-- The index: patient / study / series / instance / file, plus ONLINE filesystems.
-- Timestamps are Unix milliseconds (UTC); DICOM dates and times stay as DA/TM text so that
-- range matching is string comparison.

CREATE TABLE filesystem (
    id             INTEGER PRIMARY KEY,
    group_name     TEXT    NOT NULL,
    path           TEXT    NOT NULL UNIQUE,
    mode           TEXT    NOT NULL CHECK (mode IN ('rw', 'ro')),
    min_free_bytes INTEGER NOT NULL
);

CREATE TABLE patient (
    id                   INTEGER PRIMARY KEY,
    patient_id           TEXT    NOT NULL,
    issuer               TEXT    NOT NULL DEFAULT '',
    patient_name         TEXT    NOT NULL DEFAULT '',
    patient_name_norm    TEXT    NOT NULL DEFAULT '',
    birth_date           TEXT    NOT NULL DEFAULT '',
    sex                  TEXT    NOT NULL DEFAULT '',
    created_at           INTEGER NOT NULL,
    UNIQUE (patient_id, issuer)
);
CREATE INDEX patient_name_norm_idx ON patient (patient_name_norm);

CREATE TABLE study (
    id                       INTEGER PRIMARY KEY,
    study_uid                TEXT    NOT NULL UNIQUE,
    patient_fk               INTEGER NOT NULL REFERENCES patient (id),
    study_date               TEXT    NOT NULL DEFAULT '',
    study_time               TEXT    NOT NULL DEFAULT '',
    accession_number         TEXT    NOT NULL DEFAULT '',
    study_id                 TEXT    NOT NULL DEFAULT '',
    description              TEXT    NOT NULL DEFAULT '',
    referring_physician      TEXT    NOT NULL DEFAULT '',
    referring_physician_norm TEXT    NOT NULL DEFAULT '',
    modalities               TEXT    NOT NULL DEFAULT '',
    num_series               INTEGER NOT NULL DEFAULT 0,
    num_instances            INTEGER NOT NULL DEFAULT 0,
    size_bytes               INTEGER NOT NULL DEFAULT 0,
    availability             TEXT    NOT NULL DEFAULT 'ONLINE',
    received_at              INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    last_accessed_at         INTEGER NOT NULL
);
CREATE INDEX study_patient_idx ON study (patient_fk);
CREATE INDEX study_date_idx ON study (study_date);
CREATE INDEX study_accession_idx ON study (accession_number);
CREATE INDEX study_updated_idx ON study (updated_at);

CREATE TABLE series (
    id            INTEGER PRIMARY KEY,
    series_uid    TEXT    NOT NULL UNIQUE,
    study_fk      INTEGER NOT NULL REFERENCES study (id),
    modality      TEXT    NOT NULL DEFAULT '',
    series_number INTEGER,
    description   TEXT    NOT NULL DEFAULT '',
    body_part     TEXT    NOT NULL DEFAULT '',
    source_ae     TEXT    NOT NULL DEFAULT '',
    num_instances INTEGER NOT NULL DEFAULT 0,
    size_bytes    INTEGER NOT NULL DEFAULT 0,
    availability  TEXT    NOT NULL DEFAULT 'ONLINE',
    received_at   INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX series_study_idx ON series (study_fk);

CREATE TABLE instance (
    id               INTEGER PRIMARY KEY,
    sop_uid          TEXT    NOT NULL UNIQUE,
    series_fk        INTEGER NOT NULL REFERENCES series (id),
    sop_class_uid    TEXT    NOT NULL,
    instance_number  INTEGER,
    transfer_syntax  TEXT    NOT NULL,
    number_of_frames INTEGER,
    availability     TEXT    NOT NULL DEFAULT 'ONLINE',
    received_at      INTEGER NOT NULL
);
CREATE INDEX instance_series_idx ON instance (series_fk);

CREATE TABLE file (
    id            INTEGER PRIMARY KEY,
    instance_fk   INTEGER NOT NULL REFERENCES instance (id),
    filesystem_fk INTEGER NOT NULL REFERENCES filesystem (id),
    path          TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'OK',
    created_at    INTEGER NOT NULL,
    UNIQUE (filesystem_fk, path)
);
CREATE INDEX file_instance_idx ON file (instance_fk);
