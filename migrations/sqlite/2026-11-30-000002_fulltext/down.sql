DROP TABLE IF EXISTS search_fulltext;
