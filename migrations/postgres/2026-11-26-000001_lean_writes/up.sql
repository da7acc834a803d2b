-- Cheaper writes (measured with bench/security_bench.sh and `icm-fhir import`):
-- the generated JSONB copy of every resource was never read by the server and cost a JSON parse
-- and a second copy of the document on every write;
ALTER TABLE resources DROP COLUMN IF EXISTS content_jsonb;
-- index rows are written and removed only by the write path, together with their resource row
-- (resources rows are never deleted), so the foreign-key check on every index row bought nothing.
ALTER TABLE search_string DROP CONSTRAINT IF EXISTS search_string_resource_pk_fkey;
ALTER TABLE search_token DROP CONSTRAINT IF EXISTS search_token_resource_pk_fkey;
ALTER TABLE search_date DROP CONSTRAINT IF EXISTS search_date_resource_pk_fkey;
ALTER TABLE search_reference DROP CONSTRAINT IF EXISTS search_reference_resource_pk_fkey;
ALTER TABLE search_number DROP CONSTRAINT IF EXISTS search_number_resource_pk_fkey;
ALTER TABLE search_quantity DROP CONSTRAINT IF EXISTS search_quantity_resource_pk_fkey;
ALTER TABLE search_uri DROP CONSTRAINT IF EXISTS search_uri_resource_pk_fkey;
