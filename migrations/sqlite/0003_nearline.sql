-- NEARLINE tier: targets, packs (one tar per study or series on a target), the members of each
-- pack with their byte ranges, the jobs table every node shares, copy rules, and schedule firings.
-- Timestamps are Unix milliseconds.

CREATE TABLE nearline_target (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL CHECK (kind IN ('filesystem', 's3')),
    -- JSON settings; never credentials (those stay in files or the AWS environment).
    spec        TEXT    NOT NULL,
    from_config INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE pack (
    id           INTEGER PRIMARY KEY,
    study_fk     INTEGER NOT NULL REFERENCES study (id),
    target_fk    INTEGER NOT NULL REFERENCES nearline_target (id),
    object_key   TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('UPLOADING', 'TO_ARCHIVE', 'ARCHIVED', 'VERIFY_FAILED', 'ABANDONED')),
    size_bytes   INTEGER NOT NULL DEFAULT 0,
    sha256       TEXT    NOT NULL DEFAULT '',
    member_count INTEGER NOT NULL DEFAULT 0,
    job_fk       INTEGER,
    error        TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    verified_at  INTEGER,
    -- ABANDONED packs: when what the upload left on the target was removed.
    discarded_at INTEGER,
    UNIQUE (target_fk, object_key)
);
CREATE INDEX pack_study_idx ON pack (study_fk);
CREATE INDEX pack_status_idx ON pack (status);

CREATE TABLE pack_member (
    pack_fk     INTEGER NOT NULL REFERENCES pack (id),
    instance_fk INTEGER NOT NULL REFERENCES instance (id),
    member_path TEXT    NOT NULL,
    -- Where the member's bytes start inside the tar, and how many there are: a Range GET
    -- reads one instance without the rest of the pack.
    data_offset INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    PRIMARY KEY (pack_fk, instance_fk)
);
CREATE INDEX pack_member_instance_idx ON pack_member (instance_fk);

CREATE TABLE job (
    id               INTEGER PRIMARY KEY,
    job_type         TEXT    NOT NULL,
    study_uid        TEXT    NOT NULL,
    target_name      TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL CHECK (state IN ('QUEUED', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_run_at      INTEGER NOT NULL,
    owner_node       TEXT    NOT NULL DEFAULT '',
    lease_expires_at INTEGER NOT NULL DEFAULT 0,
    done_items       INTEGER NOT NULL DEFAULT 0,
    total_items      INTEGER NOT NULL DEFAULT 0,
    done_bytes       INTEGER NOT NULL DEFAULT 0,
    total_bytes      INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT    NOT NULL DEFAULT '',
    created_by       TEXT    NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
-- At most one live job of a kind per study and target: schedulers on several nodes may try to
-- enqueue the same work, and the second insert is simply ignored.
CREATE UNIQUE INDEX job_one_live ON job (job_type, study_uid, target_name) WHERE state IN ('QUEUED', 'RUNNING');
CREATE INDEX job_claim_idx ON job (state, next_run_at);
CREATE INDEX job_study_idx ON job (study_uid);

CREATE TABLE copy_rule (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    target_name    TEXT    NOT NULL,
    schedule       TEXT    NOT NULL,
    stable_minutes INTEGER NOT NULL,
    min_age_days   INTEGER NOT NULL,
    -- Backslash-separated lists; empty means any.
    modalities     TEXT    NOT NULL DEFAULT '',
    calling_aes    TEXT    NOT NULL DEFAULT '',
    enabled        INTEGER NOT NULL DEFAULT 1,
    from_config    INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- One row per firing of a schedule: the node whose insert wins runs that firing.
CREATE TABLE schedule_fire (
    schedule_name TEXT    NOT NULL,
    fire_at       INTEGER NOT NULL,
    node          TEXT    NOT NULL,
    PRIMARY KEY (schedule_name, fire_at)
);
