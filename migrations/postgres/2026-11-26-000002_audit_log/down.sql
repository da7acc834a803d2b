DROP TABLE audit_value;
DROP TABLE audit_log;
