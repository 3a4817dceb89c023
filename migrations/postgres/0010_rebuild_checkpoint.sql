-- rebuild-index: how far each scan got (an ONLINE filesystem by day directory, a NEARLINE
-- target by pack key), so an interrupted rebuild continues there. A finished rebuild removes
-- its rows: the next one scans everything again and only adds what is missing.
CREATE TABLE rebuild_checkpoint (
    scope      TEXT   NOT NULL PRIMARY KEY,
    position   TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
