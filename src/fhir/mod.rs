//! Pure FHIR knowledge, no I/O: registry of types, resource rules, OperationOutcome, Bundle, dates.
pub mod bundle;
pub mod compartment;
pub mod datetime;
pub mod definitions;
pub mod fhirpatch;
pub mod fhirpath;
pub mod locate;
pub mod outcome;
pub mod patch;
pub mod reference;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod search;
pub mod subscription;
pub mod terminology;
pub mod transaction;
pub mod validate;

/// The FHIR JSON media type (R4).
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
