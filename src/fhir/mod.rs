//! Pure FHIR knowledge, no I/O: registry of types, resource rules, OperationOutcome, Bundle, dates.
pub mod bundle;
pub mod datetime;
pub mod definitions;
pub mod fhirpath;
pub mod outcome;
pub mod patch;
pub mod registry;
pub mod resource;
pub mod search;
pub mod transaction;
pub mod validate;
