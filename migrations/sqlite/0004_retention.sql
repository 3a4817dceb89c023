-- ONLINE deletion by retention rules. A file row being deleted has status DELETING: the index
-- no longer offers it to retrievals, and a deletion interrupted by a crash finishes later.

CREATE TABLE retention_rule (
    id                  INTEGER PRIMARY KEY,
    name                TEXT    NOT NULL UNIQUE,
    group_name          TEXT    NOT NULL,
    schedule            TEXT    NOT NULL,
    -- Delete studies not accessed (retrieved or received) for this many days; NULL: no such rule.
    not_accessed_days   INTEGER,
    -- When a filesystem of the group has less free space than this percentage, delete least
    -- recently accessed studies until it has `free_target_percent`; NULL: no watermark.
    free_below_percent  INTEGER,
    free_target_percent INTEGER,
    min_study_age_days  INTEGER NOT NULL DEFAULT 0,
    modalities          TEXT    NOT NULL DEFAULT '',
    calling_aes         TEXT    NOT NULL DEFAULT '',
    -- Only studies whose every instance is ARCHIVED on this target; empty: on any target.
    require_target      TEXT    NOT NULL DEFAULT '',
    enabled             INTEGER NOT NULL DEFAULT 1,
    from_config         INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE INDEX file_status_idx ON file (status);
CREATE INDEX study_accessed_idx ON study (last_accessed_at);
