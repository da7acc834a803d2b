DROP STATISTICS IF EXISTS search_reference_key;
DROP STATISTICS IF EXISTS search_token_key;
DROP STATISTICS IF EXISTS search_date_key;
DROP STATISTICS IF EXISTS search_string_key;
