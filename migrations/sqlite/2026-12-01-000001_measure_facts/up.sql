-- Measure facts (store::search::facts): for the resources the program's outcome measures read,
-- one narrow row per fact — its kind (e.g. 'stay', 'hba1c', 'bp'), the resource's patient, the
-- dates, codes, reference and value the measure needs — written with the search index rows by
-- the same unit of work and removed with them. A population report reads each kind with one
-- range scan instead of probing the index tables several times per fact.
CREATE TABLE measure_facts (
    resource_pk BIGINT NOT NULL,
    res_type    TEXT   NOT NULL,
    res_id      TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    patient     TEXT   NOT NULL,
    d1l BIGINT, d1h BIGINT, d2l BIGINT, d2h BIGINT, d3l BIGINT, d3h BIGINT,
    t1 TEXT, t2 TEXT, t3 TEXT,
    rf TEXT,
    qv REAL,
    pc TEXT,
    pv REAL,
    f1 BIGINT NOT NULL,
    f2 BIGINT NOT NULL
);
CREATE INDEX measure_facts_window ON measure_facts (kind, d1l);
CREATE INDEX measure_facts_patient ON measure_facts (kind, patient);
CREATE INDEX measure_facts_pk ON measure_facts (resource_pk);
-- The facts other facts link to, by the id of their resource (an enrollment's referral).
CREATE INDEX measure_facts_id ON measure_facts (kind, res_id);
