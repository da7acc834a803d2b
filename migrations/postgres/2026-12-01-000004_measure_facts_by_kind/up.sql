-- Measure facts partitioned by kind (LIST partitions). A population report reads one kind at a
-- time; in one table the rows of a kind were spread over the pages of every kind, so a read of
-- 150,000 blood-pressure facts fetched heap pages shared with 2.3 million others. A partition
-- per kind keeps each kind's rows together (a read is a scan of its own partition) and keeps
-- that under ongoing writes. The partitions are named measure_facts_<kind> (characters other
-- than letters and digits as '_'): made here for the kinds already stored, and by the server at
-- start for every kind it installs (store::search::facts::ensure_partitions). Facts of any
-- other kind go to measure_facts_default. Every statement names its kind, so PostgreSQL reads
-- only that partition; deletes name the kinds of the resource's type.
DROP INDEX measure_facts_window;
DROP INDEX measure_facts_patient;
DROP INDEX measure_facts_pk;
DROP INDEX measure_facts_id;
ALTER TABLE measure_facts RENAME TO measure_facts_unpartitioned;
-- The same columns (types, collations, NOT NULL) as the table of 2026-12-01-000001.
CREATE TABLE measure_facts (LIKE measure_facts_unpartitioned INCLUDING DEFAULTS) PARTITION BY LIST (kind);
CREATE TABLE measure_facts_default PARTITION OF measure_facts DEFAULT;
DO $$
DECLARE k TEXT;
BEGIN
    FOR k IN SELECT DISTINCT kind FROM measure_facts_unpartitioned LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF measure_facts FOR VALUES IN (%L)',
                       'measure_facts_' || regexp_replace(k, '[^A-Za-z0-9]', '_', 'g'), k);
    END LOOP;
END $$;
INSERT INTO measure_facts SELECT * FROM measure_facts_unpartitioned;
DROP TABLE measure_facts_unpartitioned;
-- Within a partition the kind is fixed, so the indexes do not lead with it.
CREATE INDEX measure_facts_window ON measure_facts (d1l);
CREATE INDEX measure_facts_patient ON measure_facts (patient);
CREATE INDEX measure_facts_pk ON measure_facts (resource_pk);
-- The facts other facts link to, by the id of their resource (an enrollment's referral).
CREATE INDEX measure_facts_id ON measure_facts (res_id);
-- Statistics for the new partitions (VACUUM cannot run in a migration's transaction).
ANALYZE measure_facts;
