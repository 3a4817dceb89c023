-- WADO-RS /metadata, made at ingest: the instance's DICOM JSON without bulk data, deflated.
-- Kept apart from `instance` so C-FIND's scans of instance rows stay as narrow as before.
CREATE TABLE instance_metadata (
    instance_fk BIGINT PRIMARY KEY REFERENCES instance (id),
    metadata    BYTEA  NOT NULL
);
