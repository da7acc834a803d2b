//! One stored version of a resource, as the read path returns it (store::lookup).
use diesel::prelude::*;

/// One stored version of a resource.
#[derive(Debug, Clone, Queryable)]
pub struct StoredVersion {
    pub version_id: i64,
    pub last_updated: i64,
    pub deleted: bool,
    pub content: Option<String>,
}
