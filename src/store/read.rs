//! The read path: current version and specific versions of a resource.
use diesel::prelude::*;

use crate::error::ApiResult;
use crate::store::backend::{db_error, Store};
use crate::store::schema::{resource_history, resources};

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
        let mut conn = self.conn()?;
        resources::table
            .filter(resources::res_type.eq(ty))
            .filter(resources::res_id.eq(id))
            .select((
                resources::version_id,
                resources::last_updated,
                resources::deleted,
                resources::content,
            ))
            .first::<StoredVersion>(&mut *conn)
            .optional()
            .map_err(db_error)
    }

    /// A specific version.
    pub fn vread(&self, ty: &str, id: &str, version: i64) -> ApiResult<Option<StoredVersion>> {
        let mut conn = self.conn()?;
        resource_history::table
            .filter(resource_history::res_type.eq(ty))
            .filter(resource_history::res_id.eq(id))
            .filter(resource_history::version_id.eq(version))
            .select((
                resource_history::version_id,
                resource_history::last_updated,
                resource_history::deleted,
                resource_history::content,
            ))
            .first::<StoredVersion>(&mut *conn)
            .optional()
            .map_err(db_error)
    }
}
