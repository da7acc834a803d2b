-- Secondary indexes an import into an empty database dropped, to build once after its load
-- (src/store/deferred.rs). A row outlives the import only if the import was stopped before it
-- built the index; the next migration (server start, import, `icm-fhir migrate`) builds it.
CREATE TABLE deferred_index (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
