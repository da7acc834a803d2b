-- Search index rows: one narrow table per search-parameter type, keyed by the current resource
-- row (resources.pk). Rows exist only for current, non-deleted versions; the one write path
-- replaces a resource's rows in the same transaction as the resource.
-- Lookup indexes INCLUDE resource_pk (and the probe indexes their values) so the planner can
-- answer from the index alone (index-only scans).
-- Text columns compared by prefix use the "C" collation so range/LIKE-prefix lookups use the index.
CREATE TABLE search_string (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value_norm  TEXT   COLLATE "C" NOT NULL, -- lower case, accents removed
    value_exact TEXT   COLLATE "C" NOT NULL
);
CREATE INDEX search_string_lookup ON search_string (res_type, param, value_norm) INCLUDE (resource_pk);
CREATE INDEX search_string_pk ON search_string (resource_pk, param) INCLUDE (res_type, value_norm);

CREATE TABLE search_token (
    resource_pk  BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type     TEXT   NOT NULL,
    param        TEXT   NOT NULL,
    system       TEXT   COLLATE "C",
    code         TEXT   COLLATE "C",
    display_norm TEXT   COLLATE "C" -- folded display / text, for :text
);
CREATE INDEX search_token_lookup ON search_token (res_type, param, code, system) INCLUDE (resource_pk);
CREATE INDEX search_token_pk ON search_token (resource_pk, param, code, system) INCLUDE (res_type);

CREATE TABLE search_date (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    low         BIGINT NOT NULL, -- microseconds since the epoch, inclusive
    high        BIGINT NOT NULL  -- exclusive
);
CREATE INDEX search_date_low ON search_date (res_type, param, low) INCLUDE (high, resource_pk);
CREATE INDEX search_date_high ON search_date (res_type, param, high) INCLUDE (low, resource_pk);
CREATE INDEX search_date_pk ON search_date (resource_pk, param, low, high) INCLUDE (res_type);

CREATE TABLE search_reference (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    target_type TEXT   COLLATE "C",
    target_id   TEXT   COLLATE "C",
    target_url  TEXT   COLLATE "C"
);
CREATE INDEX search_reference_lookup ON search_reference (res_type, param, target_id, target_type) INCLUDE (resource_pk);
CREATE INDEX search_reference_target ON search_reference (target_id, target_type) INCLUDE (res_type, param, resource_pk);
CREATE INDEX search_reference_url ON search_reference (res_type, param, target_url);
CREATE INDEX search_reference_pk ON search_reference (resource_pk, param) INCLUDE (res_type, target_type, target_id);

CREATE TABLE search_number (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value       DOUBLE PRECISION NOT NULL
);
CREATE INDEX search_number_lookup ON search_number (res_type, param, value);
CREATE INDEX search_number_pk ON search_number (resource_pk, param) INCLUDE (res_type, value);

CREATE TABLE search_quantity (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    system      TEXT   COLLATE "C",
    code        TEXT   COLLATE "C",
    unit        TEXT   COLLATE "C"
);
CREATE INDEX search_quantity_lookup ON search_quantity (res_type, param, value);
CREATE INDEX search_quantity_pk ON search_quantity (resource_pk, param) INCLUDE (res_type, value);

CREATE TABLE search_uri (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value       TEXT   COLLATE "C" NOT NULL
);
CREATE INDEX search_uri_lookup ON search_uri (res_type, param, value);
CREATE INDEX search_uri_pk ON search_uri (resource_pk, param) INCLUDE (res_type, value);

-- Keyset paging over a type without a sort key.
CREATE INDEX resources_type_pk ON resources (res_type, pk) WHERE NOT deleted;
