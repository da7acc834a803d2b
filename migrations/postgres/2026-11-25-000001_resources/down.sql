DROP TABLE resource_history;
DROP TABLE resources;
