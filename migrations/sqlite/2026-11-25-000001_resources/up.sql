-- Current version of every resource (one row per type/id), plus full version history.
CREATE TABLE resources (
    pk            INTEGER PRIMARY KEY AUTOINCREMENT,
    res_type      TEXT    NOT NULL,
    res_id        TEXT    NOT NULL,
    version_id    BIGINT  NOT NULL,
    last_updated  BIGINT  NOT NULL, -- microseconds since the Unix epoch (UTC)
    deleted       BOOLEAN NOT NULL DEFAULT 0,
    content       TEXT,             -- resource JSON as stored (NULL once deleted)
    CONSTRAINT resources_type_id UNIQUE (res_type, res_id)
);
CREATE INDEX resources_type_updated ON resources (res_type, last_updated);

CREATE TABLE resource_history (
    hid           INTEGER PRIMARY KEY AUTOINCREMENT,
    res_type      TEXT    NOT NULL,
    res_id        TEXT    NOT NULL,
    version_id    BIGINT  NOT NULL,
    last_updated  BIGINT  NOT NULL,
    method        TEXT    NOT NULL,
    deleted       BOOLEAN NOT NULL DEFAULT 0,
    content       TEXT,
    CONSTRAINT history_type_id_version UNIQUE (res_type, res_id, version_id)
);
CREATE INDEX history_type_hid ON resource_history (res_type, hid);
CREATE INDEX history_updated ON resource_history (last_updated);
