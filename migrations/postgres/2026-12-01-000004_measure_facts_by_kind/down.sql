-- Back to one table (the indexes of 2026-12-01-000001).
CREATE TABLE measure_facts_plain (LIKE measure_facts INCLUDING DEFAULTS);
INSERT INTO measure_facts_plain SELECT * FROM measure_facts;
DROP TABLE measure_facts;
ALTER TABLE measure_facts_plain RENAME TO measure_facts;
CREATE INDEX measure_facts_window ON measure_facts (kind, d1l);
CREATE INDEX measure_facts_patient ON measure_facts (kind, patient);
CREATE INDEX measure_facts_pk ON measure_facts (resource_pk);
CREATE INDEX measure_facts_id ON measure_facts (kind, res_id);
