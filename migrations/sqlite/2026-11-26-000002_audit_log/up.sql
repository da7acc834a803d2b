-- The audit trail: one row per AuditEvent, append-only, apart from `resources` (see the
-- PostgreSQL migration of the same name for why).
CREATE TABLE audit_log (
    pk             INTEGER PRIMARY KEY AUTOINCREMENT,
    res_type       TEXT    NOT NULL DEFAULT 'AuditEvent',
    res_id         TEXT    NOT NULL,
    version_id     BIGINT  NOT NULL DEFAULT 1,
    last_updated   BIGINT  NOT NULL,
    deleted        BOOLEAN NOT NULL DEFAULT 0,
    content        TEXT    NOT NULL,
    recorded       BIGINT  NOT NULL,
    patient        TEXT,
    agent          TEXT,
    altid          TEXT,
    entity         TEXT,
    action         TEXT,
    outcome        TEXT,
    subtype        TEXT,
    subtype_system TEXT,
    address        TEXT
);
CREATE UNIQUE INDEX audit_log_id ON audit_log (res_id);
CREATE INDEX audit_log_recorded ON audit_log (recorded);
CREATE INDEX audit_log_patient ON audit_log (patient) WHERE patient IS NOT NULL;
CREATE INDEX audit_log_agent ON audit_log (agent) WHERE agent IS NOT NULL;
CREATE INDEX audit_log_altid ON audit_log (altid) WHERE altid IS NOT NULL;
CREATE INDEX audit_log_entity ON audit_log (entity) WHERE entity IS NOT NULL;

CREATE TABLE audit_value (
    audit_pk BIGINT NOT NULL,
    param    TEXT   NOT NULL,
    value    TEXT   NOT NULL
);
CREATE INDEX audit_value_lookup ON audit_value (param, value, audit_pk);
