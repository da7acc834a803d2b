-- PostgreSQL only (extended statistics of the search index tables): SQLite's planner keeps
-- per-index statistics in sqlite_stat1/stat4 (ANALYZE, PRAGMA optimize after an import).
SELECT 1;
