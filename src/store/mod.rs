//! diesel storage: one write path and one read path for every resource, on PostgreSQL or SQLite.
pub mod access;
pub mod audit;
pub mod backend;
pub mod backup;
pub mod deferred;
pub mod export;
pub mod fulltext;
pub mod history;
pub mod index;
pub mod lookup;
pub mod members;
pub mod read;
pub mod references;
pub mod replicas;
pub mod schema;
pub mod search;
pub mod sql;
pub mod subscriptions;
pub mod verify;
pub mod visibility;
pub mod write;

pub use backend::{Backend, DbConn, Store};
