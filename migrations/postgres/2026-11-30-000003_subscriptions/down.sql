DROP TABLE IF EXISTS subscription_outbox;
DROP TABLE IF EXISTS subscription_access;
