DROP TABLE index_meta;
ALTER TABLE search_string DROP COLUMN grp;
ALTER TABLE search_token DROP COLUMN grp;
ALTER TABLE search_date DROP COLUMN grp;
ALTER TABLE search_reference DROP COLUMN grp;
ALTER TABLE search_number DROP COLUMN grp;
ALTER TABLE search_quantity DROP COLUMN grp;
ALTER TABLE search_uri DROP COLUMN grp;
