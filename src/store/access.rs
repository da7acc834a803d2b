//! Reads the access policy needs: current resources of a type (CareTeam, PractitionerRole).
//! A full scan of one type's current rows; replace by an index lookup once search indexes exist.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::ApiResult;
use crate::store::backend::{db_error, Store};
use crate::store::schema::resources;

impl Store {
    /// Every current, non-deleted resource of `ty`.
    pub fn current_of_type(&self, ty: &str) -> ApiResult<Vec<Value>> {
        let mut conn = self.conn()?;
        let rows: Vec<Option<String>> = resources::table
            .filter(resources::res_type.eq(ty))
            .filter(resources::deleted.eq(false))
            .select(resources::content)
            .load(&mut *conn)
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .flatten()
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect())
    }
}
