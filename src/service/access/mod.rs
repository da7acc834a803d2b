//! The access model, pure: SMART scopes, the interaction a request is, the patient and
//! care-team boundaries. Enforced in one place: service::context builds the request's
//! `Visibility` from it, and every read and write below takes that context.
pub mod policy;
pub mod scope;
