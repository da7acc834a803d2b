-- Search index rows: one narrow table per search-parameter type, keyed by the current resource
-- row (resources.pk). Rows exist only for current, non-deleted versions; the one write path
-- replaces a resource's rows in the same transaction as the resource.
-- Text columns compared by prefix use the "C" collation (SQLite compares text bytewise already).
CREATE TABLE search_string (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value_norm  TEXT   NOT NULL, -- lower case, accents removed
    value_exact TEXT   NOT NULL
);
CREATE INDEX search_string_lookup ON search_string (res_type, param, value_norm, resource_pk);
CREATE INDEX search_string_pk ON search_string (resource_pk, param, res_type, value_norm);

CREATE TABLE search_token (
    resource_pk  BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type     TEXT   NOT NULL,
    param        TEXT   NOT NULL,
    system       TEXT  ,
    code         TEXT  ,
    display_norm TEXT   -- folded display / text, for :text
);
CREATE INDEX search_token_lookup ON search_token (res_type, param, code, system, resource_pk);
CREATE INDEX search_token_pk ON search_token (resource_pk, param, code, system, res_type);

CREATE TABLE search_date (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    low         BIGINT NOT NULL, -- microseconds since the epoch, inclusive
    high        BIGINT NOT NULL  -- exclusive
);
CREATE INDEX search_date_low ON search_date (res_type, param, low, high, resource_pk);
CREATE INDEX search_date_high ON search_date (res_type, param, high, low, resource_pk);
CREATE INDEX search_date_pk ON search_date (resource_pk, param, low, high, res_type);

CREATE TABLE search_reference (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    target_type TEXT  ,
    target_id   TEXT  ,
    target_url  TEXT  
);
CREATE INDEX search_reference_lookup ON search_reference (res_type, param, target_id, target_type, resource_pk);
CREATE INDEX search_reference_target ON search_reference (target_id, target_type, res_type, param, resource_pk);
CREATE INDEX search_reference_url ON search_reference (res_type, param, target_url);
CREATE INDEX search_reference_pk ON search_reference (resource_pk, param, res_type, target_type, target_id);

CREATE TABLE search_number (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value       REAL NOT NULL
);
CREATE INDEX search_number_lookup ON search_number (res_type, param, value);
CREATE INDEX search_number_pk ON search_number (resource_pk, param, res_type, value);

CREATE TABLE search_quantity (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value       REAL NOT NULL,
    system      TEXT  ,
    code        TEXT  ,
    unit        TEXT  
);
CREATE INDEX search_quantity_lookup ON search_quantity (res_type, param, value);
CREATE INDEX search_quantity_pk ON search_quantity (resource_pk, param, res_type, value);

CREATE TABLE search_uri (
    resource_pk BIGINT NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
    res_type    TEXT   NOT NULL,
    param       TEXT   NOT NULL,
    value       TEXT   NOT NULL
);
CREATE INDEX search_uri_lookup ON search_uri (res_type, param, value);
CREATE INDEX search_uri_pk ON search_uri (resource_pk, param, res_type, value);

-- Keyset paging over a type without a sort key.
CREATE INDEX resources_type_pk ON resources (res_type, pk) WHERE NOT deleted;
