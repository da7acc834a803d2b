DROP INDEX IF EXISTS resources_type_pk;
DROP TABLE IF EXISTS search_uri;
DROP TABLE IF EXISTS search_quantity;
DROP TABLE IF EXISTS search_number;
DROP TABLE IF EXISTS search_reference;
DROP TABLE IF EXISTS search_date;
DROP TABLE IF EXISTS search_token;
DROP TABLE IF EXISTS search_string;
