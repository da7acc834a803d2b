-- Extended statistics on the search index tables. Their rows are keyed by (res_type, param[,
-- target_type]), and those columns are strongly dependent (a parameter name belongs to one or a
-- few types; `focus` of a Task points at one type), so PostgreSQL's per-column estimates multiply
-- to far too few rows: the EpisodeOfCare→ServiceRequest `incoming-referral` rows of 10,000
-- patients were estimated at 15 instead of 8,069, and the join to them ran as 8,069 index probes
-- instead of one hash join. With the most-common-value lists of the combinations the estimates
-- match. README "Stored measure facts".
CREATE STATISTICS IF NOT EXISTS search_reference_key (mcv, dependencies)
    ON res_type, param, target_type FROM search_reference;
CREATE STATISTICS IF NOT EXISTS search_token_key (mcv, dependencies)
    ON res_type, param FROM search_token;
CREATE STATISTICS IF NOT EXISTS search_date_key (mcv, dependencies)
    ON res_type, param FROM search_date;
CREATE STATISTICS IF NOT EXISTS search_string_key (mcv, dependencies)
    ON res_type, param FROM search_string;
ANALYZE search_reference;
ANALYZE search_token;
ANALYZE search_date;
ANALYZE search_string;
