DROP TABLE IF EXISTS measure_facts;
