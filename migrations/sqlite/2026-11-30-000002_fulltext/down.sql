DROP TABLE IF EXISTS store_backfill;
DROP TABLE IF EXISTS search_fulltext;
