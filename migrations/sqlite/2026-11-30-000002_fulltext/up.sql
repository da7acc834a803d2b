-- Full-text search (`_text`, `_content`): an FTS5 table whose rowid is the resource row
-- (resources.pk), one row per current, non-deleted resource, written, replaced and removed by
-- the one write path in the resource's transaction, like the search_* index rows. Contentless
-- (the text is not stored twice; rows are deleted by rowid). The porter tokenizer stems English
-- words; the text is the narrative (tags stripped) and every string value of the resource,
-- folded by the server (src/fhir/search/fulltext.rs).
CREATE VIRTUAL TABLE search_fulltext USING fts5(
    narrative,
    content_text,
    tokenize = 'porter unicode61 remove_diacritics 2',
    content = '',
    contentless_delete = 1
);

-- Resources stored before this migration get their rows from the reindex at start that
-- index version 3 brings (src/store/index.rs, INDEX_VERSION).
