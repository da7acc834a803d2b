//! The read path: current version and specific versions of a resource.
use diesel::prelude::*;

use crate::error::ApiResult;
use crate::store::backend::Store;

/// One stored version of a resource.
#[derive(Debug, Clone, Queryable)]
pub struct StoredVersion {
    pub version_id: i64,
    pub last_updated: i64,
    pub deleted: bool,
    pub content: Option<String>,
}

impl Store {
    /// The current row for type/id (deleted rows included, so callers can answer 410).
    pub fn read(&self, ty: &str, id: &str) -> ApiResult<Option<StoredVersion>> {
        crate::store::lookup::read_current(&mut *self.conn()?, ty, id)
    }

    /// A specific version.
    pub fn vread(&self, ty: &str, id: &str, version: i64) -> ApiResult<Option<StoredVersion>> {
        crate::store::lookup::read_version(&mut *self.conn()?, ty, id, version)
    }
}
