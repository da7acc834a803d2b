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
CREATE TABLE measure_facts (
    resource_pk BIGINT NOT NULL,
    res_type    TEXT   NOT NULL COLLATE "C",
    res_id      TEXT   NOT NULL, -- collated as resources.res_id (the ids references are joined to)
    kind        TEXT   NOT NULL COLLATE "C",
    patient     TEXT   NOT NULL COLLATE "C",
    d1l BIGINT, d1h BIGINT, d2l BIGINT, d2h BIGINT, d3l BIGINT, d3h BIGINT,
    t1 TEXT COLLATE "C", t2 TEXT COLLATE "C", t3 TEXT COLLATE "C",
    rf TEXT COLLATE "C",
    qv DOUBLE PRECISION,
    pc TEXT COLLATE "C",
    pv DOUBLE PRECISION,
    f1 BIGINT NOT NULL,
    f2 BIGINT NOT NULL
) PARTITION BY LIST (kind);
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
