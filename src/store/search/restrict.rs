//! Access in the query: a [`Visibility`] becomes SQL predicates on every row a read touches —
//! the matches of a search, rows reached through chains and `_has`, included resources,
//! counts, conditional criteria, referrer look-ups, history and `$everything`. A row outside
//! the caller's access is never loaded, counted or paged over.
use std::collections::BTreeSet;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use super::predicates::Builder;
use crate::error::ApiResult;
use crate::fhir::compartment;
use crate::fhir::registry::Registry;
use crate::store::audit;
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{is_pg, load, Sql};
use crate::store::visibility::{Rows, Visibility};

impl Builder<'_> {
    /// ` AND <visibility>` on row `a` of type `ty` (nothing when every row is visible).
    pub(super) fn and_visible(&mut self, q: &mut Sql, ty: &str, a: &str) {
        if self.vis.rows(ty) != Rows::All {
            q.push(" AND ");
            self.visible(q, ty, a);
        }
    }

    /// The visibility predicate on row `a` (a `resources` or `audit_log` row) of type `ty`.
    pub(super) fn visible(&mut self, q: &mut Sql, ty: &str, a: &str) {
        match self.vis.rows(ty) {
            Rows::All => {
                q.push("1 = 1");
            }
            Rows::Hidden => {
                q.push("1 = 0");
            }
            Rows::Patients(p) => {
                let n = self.n;
                self.n += 1;
                in_compartments(q, ty, a, p, n);
            }
            Rows::Ids(ids) => by_ids(q, ty, a, ids),
        }
    }
}

/// Row `a` (which may carry only a `pk`, when a search is driven by an index table) is one of
/// the `ty` rows with these ids.
fn by_ids(q: &mut Sql, ty: &str, a: &str, ids: &BTreeSet<String>) {
    if ids.is_empty() {
        q.push("1 = 0");
    } else {
        let ids: Vec<String> = ids.iter().cloned().collect();
        q.push(&format!(
            "{a}.pk IN (SELECT v.pk FROM {} v WHERE v.res_type = ",
            super::table(ty)
        ))
        .text(ty)
        .push(" AND v.res_id IN ")
        .text_list(&ids)
        .push(")");
    }
}

/// The Patient-compartment restriction on row `a` of type `ty` (`n` makes aliases unique).
fn in_compartments(q: &mut Sql, ty: &str, a: &str, patients: &BTreeSet<String>, n: u32) {
    let patients: Vec<String> = patients.iter().cloned().collect();
    if ty == "Patient" {
        if patients.is_empty() {
            q.push("1 = 0");
        } else {
            q.push(a).push(".res_id IN ").text_list(&patients);
        }
        return;
    }
    let params = compartment::params(ty);
    if params.is_empty() {
        // Not patient data (Practitioner, Organization, …).
        q.push("1 = 1");
        return;
    }
    if patients.is_empty() {
        q.push("1 = 0");
        return;
    }
    if audit::is_audit_log(ty) {
        q.push(&format!("({a}.patient IN ")).text_list(&patients);
        q.push(&format!(
            " OR {a}.pk IN (SELECT x.audit_pk FROM audit_value x WHERE x.param = 'patient' AND x.value IN "
        ))
        .text_list(&patients)
        .push("))");
        return;
    }
    let c = format!("vis{n}");
    q.push(&format!(
        "{a}.pk IN (SELECT {c}.resource_pk FROM search_reference {c} WHERE {c}.res_type = "
    ))
    .text(ty)
    .push(&format!(" AND {c}.param IN "))
    .text_list(params)
    .push(&format!(
        " AND {c}.target_type = 'Patient' AND {c}.target_id IN "
    ))
    .text_list(&patients)
    .push(")");
}

/// The visibility predicate on rows of any type: `ty_col`/`id_col` name the row's type and
/// id, `pk_col` the pk of its current `resources` row (NULL when it has none). Used where one
/// statement lists several types (system history).
pub fn visible_any(q: &mut Sql, vis: &dyn Visibility, ty_col: &str, id_col: &str, pk_col: &str) {
    let mut all: Vec<String> = Vec::new();
    let mut bounded: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut listed: Vec<(String, BTreeSet<String>)> = Vec::new();
    for ty in Registry::get().type_names() {
        match vis.rows(ty) {
            Rows::All => all.push(ty.to_string()),
            Rows::Hidden => {}
            Rows::Patients(_) if !compartment::is_member_type(ty) => all.push(ty.to_string()),
            Rows::Patients(p) => bounded.push((ty.to_string(), p.clone())),
            Rows::Ids(ids) => listed.push((ty.to_string(), ids.clone())),
        }
    }
    q.push("(");
    if all.is_empty() {
        q.push("1 = 0");
    } else {
        q.push(ty_col).push(" IN ").text_list(&all);
    }
    for (n, (ty, patients)) in bounded.iter().enumerate() {
        if patients.is_empty() {
            continue;
        }
        let patients: Vec<String> = patients.iter().cloned().collect();
        q.push(" OR (")
            .push(ty_col)
            .push(" = ")
            .text(ty.clone())
            .push(" AND ");
        if ty == "Patient" {
            q.push(id_col).push(" IN ").text_list(&patients);
        } else {
            let c = format!("va{n}");
            q.push(&format!(
                "{pk_col} IN (SELECT {c}.resource_pk FROM search_reference {c} WHERE {c}.res_type = "
            ))
            .text(ty.clone())
            .push(&format!(" AND {c}.param IN "))
            .text_list(compartment::params(ty))
            .push(&format!(
                " AND {c}.target_type = 'Patient' AND {c}.target_id IN "
            ))
            .text_list(&patients)
            .push(")");
        }
        q.push(")");
    }
    for (ty, ids) in &listed {
        if ids.is_empty() {
            continue;
        }
        let ids: Vec<String> = ids.iter().cloned().collect();
        q.push(" OR (").push(ty_col).push(" = ").text(ty.clone());
        q.push(" AND ")
            .push(id_col)
            .push(" IN ")
            .text_list(&ids)
            .push(")");
    }
    q.push(")");
}

#[derive(QueryableByName)]
struct PkRow {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    res_id: String,
}

/// Of the given `resources` rows (type, pk), the pks the caller may see: one statement per
/// type, the restriction in its WHERE clause.
pub fn visible_pks(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    rows: &[(String, i64)],
) -> ApiResult<std::collections::HashSet<i64>> {
    let mut by_type: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    for (t, pk) in rows {
        by_type.entry(t.as_str()).or_default().push(*pk);
    }
    let mut keep = std::collections::HashSet::new();
    for (ty, pks) in by_type {
        match vis.rows(ty) {
            Rows::Hidden => continue,
            Rows::All => {
                keep.extend(pks);
                continue;
            }
            Rows::Patients(_) | Rows::Ids(_) => {}
        }
        let mut s = Sql::new();
        s.push("SELECT r.pk FROM resources r WHERE r.pk IN (");
        for (n, pk) in pks.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.int(*pk);
        }
        s.push(") AND ");
        Builder {
            n: 0,
            vis,
            pg: is_pg(conn),
        }
        .visible(&mut s, ty, "r");
        let found: Vec<PkRow> = load(conn, &s).map_err(db_error)?;
        keep.extend(found.into_iter().map(|r| r.pk));
    }
    Ok(keep)
}

/// Of the given ids of current `ty` resources, those the caller may see.
pub fn visible_ids(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    ty: &str,
    ids: &[String],
) -> ApiResult<Vec<String>> {
    match vis.rows(ty) {
        Rows::Hidden => return Ok(vec![]),
        Rows::All => return Ok(ids.to_vec()),
        Rows::Patients(_) | Rows::Ids(_) => {}
    }
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut s = Sql::new();
        s.push(&format!(
            "SELECT r.res_id FROM {} r WHERE r.res_type = ",
            super::table(ty)
        ))
        .text(ty)
        .push(" AND NOT r.deleted AND r.res_id IN ")
        .text_list(chunk)
        .push(" AND ");
        Builder {
            n: 0,
            vis,
            pg: is_pg(conn),
        }
        .visible(&mut s, ty, "r");
        let rows: Vec<IdRow> = load(conn, &s).map_err(db_error)?;
        out.extend(rows.into_iter().map(|r| r.res_id));
    }
    Ok(out)
}
