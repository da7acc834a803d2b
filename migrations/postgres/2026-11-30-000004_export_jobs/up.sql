-- Bulk Data export jobs ($export): one row per kick-off, so the status of a job is known to
-- every server process and survives a restart. The NDJSON files live in ICM_EXPORT_DIR/{id}/.
CREATE TABLE export_jobs (
    id               TEXT   PRIMARY KEY,
    -- who kicked it off (token subject|client): only they may poll, download or cancel
    owner            TEXT   NOT NULL,
    -- in-progress | completed | failed
    status           TEXT   NOT NULL,
    -- the kick-off request URL, as the manifest reports it
    request          TEXT   NOT NULL,
    -- microseconds since the epoch: nothing written after it is exported
    transaction_time BIGINT NOT NULL,
    progress         TEXT,
    -- completed: the manifest's output and error arrays (JSON)
    manifest         TEXT,
    -- failed: why
    error            TEXT,
    -- last sign of life of the process running the job (microseconds)
    heartbeat        BIGINT NOT NULL,
    created          BIGINT NOT NULL
);
