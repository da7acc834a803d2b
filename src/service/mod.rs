//! The service layer: the use cases between the HTTP edge and the pure core / storage.
//! Everything here takes the request's [`context::RequestContext`] explicitly: one search
//! service ([`search`]), one write unit of work ([`write`]), the reads ([`read`]), the care
//! operations ([`operations`]), the program's measures ([`measures`]) and the audit trail
//! ([`audit`]).
pub mod access;
pub mod audit;
pub mod bundle;
pub mod context;
pub mod definitions;
pub mod export;
pub mod measures;
pub mod operations;
pub mod program;
pub mod read;
pub mod search;
pub mod subscriptions;
pub mod terminology;
pub mod write;
