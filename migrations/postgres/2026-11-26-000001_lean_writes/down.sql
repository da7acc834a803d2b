ALTER TABLE resources ADD COLUMN content_jsonb JSONB GENERATED ALWAYS AS (content::jsonb) STORED;
ALTER TABLE search_string ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
ALTER TABLE search_token ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
ALTER TABLE search_date ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
ALTER TABLE search_reference ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
ALTER TABLE search_number ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
ALTER TABLE search_quantity ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
ALTER TABLE search_uri ADD FOREIGN KEY (resource_pk) REFERENCES resources (pk) ON DELETE CASCADE;
