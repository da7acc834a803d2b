-- Full-text search (`_text`, `_content`): one row per current, non-deleted resource row
-- (resources.pk), written, replaced and removed by the one write path in the resource's
-- transaction, like the search_* index rows. Only the tsvectors are stored (english
-- configuration: stemmed, stop words left out); the text they come from is the narrative
-- (tags stripped) and every string value of the resource, folded by the server
-- (src/fhir/search/fulltext.rs).
CREATE TABLE search_fulltext (
    resource_pk  BIGINT   PRIMARY KEY,
    narrative    TSVECTOR NOT NULL,
    content_text TSVECTOR NOT NULL
);
CREATE INDEX search_fulltext_narrative ON search_fulltext USING GIN (narrative);
CREATE INDEX search_fulltext_content ON search_fulltext USING GIN (content_text);

-- Resources stored before this migration get their rows from the reindex at start that
-- index version 3 brings (src/store/index.rs, INDEX_VERSION).
