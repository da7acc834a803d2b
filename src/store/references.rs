//! Look-ups of referential integrity: whether a referenced resource is there, and which
//! current resources refer to one (through the search reference index). Both answer within
//! the caller's [`Visibility`]: a resource it may not see counts as absent, and referrers it may
//! not see are only counted, never named.
use diesel::prelude::*;

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn};
use crate::store::schema::resources;
use crate::store::sql::{load, Sql};
use crate::store::visibility::{Rows, Visibility};

/// What stands at a referenced type/id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Current,
    Deleted,
    /// Never stored, or not visible to the caller.
    Missing,
}

/// The state of ty/id as the caller may know it.
pub fn target(conn: &mut DbConn, vis: &dyn Visibility, ty: &str, id: &str) -> ApiResult<Target> {
    match vis.rows(ty) {
        Rows::Hidden => return Ok(Target::Missing),
        Rows::Patients(_) | Rows::Ids(_) => {
            let seen = crate::store::search::visible_ids(conn, vis, ty, &[id.to_string()])?;
            return Ok(if seen.is_empty() {
                Target::Missing
            } else {
                Target::Current
            });
        }
        Rows::All => {}
    }
    let found: Option<bool> = resources::table
        .filter(resources::res_type.eq(ty))
        .filter(resources::res_id.eq(id))
        .select(resources::deleted)
        .get_result::<bool>(conn)
        .optional()
        .map_err(db_error)?;
    Ok(match found {
        Some(false) => Target::Current,
        Some(true) => Target::Deleted,
        None => Target::Missing,
    })
}

#[derive(diesel::QueryableByName)]
struct Referrer {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pk: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

/// Current resources that refer to ty/id.
#[derive(Debug, Clone, Default)]
pub struct Referrers {
    /// Those the caller may see, (type, id), at most the limit asked for.
    pub visible: Vec<(String, String)>,
    /// Whether there are others (beyond the limit, or outside the caller's access).
    pub more: bool,
}

impl Referrers {
    pub fn is_empty(&self) -> bool {
        self.visible.is_empty() && !self.more
    }
}

/// Current resources (other than the target itself) that refer to `ty/id`, from the search
/// reference index (so: references covered by a search parameter).
pub fn referrers(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    ty: &str,
    id: &str,
    limit: i64,
) -> ApiResult<Referrers> {
    let mut q = Sql::new();
    q.push("SELECT DISTINCT r.pk AS pk, r.res_type AS res_type, r.res_id AS res_id FROM search_reference s JOIN resources r ON r.pk = s.resource_pk WHERE s.target_type = ")
        .text(ty)
        .push(" AND s.target_id = ")
        .text(id)
        // The audit trail records accesses; it never keeps a resource from being deleted.
        .push(" AND s.res_type <> 'AuditEvent' AND NOT (r.res_type = ")
        .text(ty)
        .push(" AND r.res_id = ")
        .text(id)
        .push(") ORDER BY r.res_type, r.res_id")
        .limit(limit + 1);
    let rows: Vec<Referrer> = load(conn, &q).map_err(db_error)?;
    let mut more = rows.len() as i64 > limit;
    let rows: Vec<Referrer> = rows.into_iter().take(limit as usize).collect();
    let pairs: Vec<(String, i64)> = rows.iter().map(|r| (r.res_type.clone(), r.pk)).collect();
    let keep = crate::store::search::visible_pks(conn, vis, &pairs)?;
    let mut visible = Vec::new();
    for r in rows {
        if keep.contains(&r.pk) {
            visible.push((r.res_type, r.res_id));
        } else {
            more = true;
        }
    }
    Ok(Referrers { visible, more })
}
