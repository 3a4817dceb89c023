-- The audit trail: who did what to which study, when, with what outcome. Append-only: the
-- archive never updates or deletes a row (the triggers refuse it), so the table can answer an
-- investigation. Patient IDs are stored here on purpose; it is the application log that must
-- not carry them.
CREATE TABLE audit_event (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    node       TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL CHECK (outcome IN ('SUCCESS', 'FAILURE')),
    actor      TEXT    NOT NULL DEFAULT '',
    peer       TEXT    NOT NULL DEFAULT '',
    study_uid  TEXT    NOT NULL DEFAULT '',
    patient_id TEXT    NOT NULL DEFAULT '',
    detail     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_event_at ON audit_event (at);
CREATE INDEX audit_event_study ON audit_event (study_uid) WHERE study_uid <> '';

CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
