-- Composite search parameters and :of-type: the rows of one resource found in the same element
-- (an Observation.component, an identifier and its type) share a non-zero group number, so a
-- search can require its parts to match within one repetition. 0: not part of a group.
ALTER TABLE search_string ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_token ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_date ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_reference ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_number ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_quantity ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_uri ADD COLUMN grp BIGINT NOT NULL DEFAULT 0;
-- What the index rows were built with: the server rebuilds them (icm-fhir reindex) at start when
-- the extraction rules changed since (src/store/index.rs, INDEX_VERSION).
CREATE TABLE index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
