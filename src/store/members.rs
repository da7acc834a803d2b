//! Group members kept as rows (`group_members`): a Group whose membership is large and changes
//! one member at a time (the program cohorts) stores its definition as JSON and each member as
//! a row, so a change costs one row (an index look-up and a write), never a rewrite of the
//! whole list. `member` is materialised from the rows, in row order, whenever the current Group
//! is read ([`fill`], [`fill_found`]), with `quantity` the count of active members. Each row
//! has the Group's `member` search_reference row, written with it and kept by later versions
//! of the Group (store::index), so `Group?member=`, chains, `_has` and `_revinclude` work as
//! for any Group. Which Groups are kept this way is the service's decision; the store only
//! keeps rows.
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel::QueryableByName;
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn};
use crate::store::search::Found;
use crate::store::sql::{execute, load, Bind, Sql};

/// One member of a Group.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Member {
    #[diesel(sql_type = Text)]
    pub patient_id: String,
    #[diesel(sql_type = Bool)]
    pub inactive: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub period_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub period_end: Option<String>,
}

impl Member {
    /// The FHIR `Group.member` element.
    pub fn to_json(&self) -> Value {
        let mut m = json!({"entity": {"reference": format!("Patient/{}", self.patient_id)},
            "inactive": self.inactive});
        let mut p = serde_json::Map::new();
        if let Some(s) = &self.period_start {
            p.insert("start".into(), json!(s));
        }
        if let Some(e) = &self.period_end {
            p.insert("end".into(), json!(e));
        }
        if !p.is_empty() {
            m["period"] = Value::Object(p);
        }
        m
    }
}

fn opt(s: &Option<String>) -> Bind {
    match s {
        Some(v) => Bind::Text(v.clone()),
        None => Bind::Null,
    }
}

const COLUMNS: &str = "patient_id, inactive, period_start, period_end";

/// The member row of `patient` in Group `group`, if any (one index look-up).
pub fn get(conn: &mut DbConn, group: &str, patient: &str) -> ApiResult<Option<Member>> {
    let mut q = Sql::new();
    q.push(&format!(
        "SELECT {COLUMNS} FROM group_members WHERE group_id = "
    ))
    .text(group)
    .push(" AND patient_id = ")
    .text(patient);
    Ok(load::<Member>(conn, &q).map_err(db_error)?.pop())
}

/// The member rows of `patients` in Group `group` (one query per 500).
pub fn get_many(conn: &mut DbConn, group: &str, patients: &[String]) -> ApiResult<Vec<Member>> {
    let mut out = Vec::new();
    for chunk in patients.chunks(500) {
        let mut q = Sql::new();
        q.push(&format!(
            "SELECT {COLUMNS} FROM group_members WHERE group_id = "
        ))
        .text(group)
        .push(" AND patient_id IN ")
        .text_list(chunk);
        out.extend(load::<Member>(conn, &q).map_err(db_error)?);
    }
    Ok(out)
}

/// Every member of Group `group`, in the order they joined.
pub fn list(conn: &mut DbConn, group: &str) -> ApiResult<Vec<Member>> {
    let mut q = Sql::new();
    q.push(&format!(
        "SELECT {COLUMNS} FROM group_members WHERE group_id = "
    ))
    .text(group)
    .push(" ORDER BY seq");
    load::<Member>(conn, &q).map_err(db_error)
}

#[derive(QueryableByName)]
struct Pk {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

/// The resource row of the current Group `group` (its index rows hang on it).
fn group_pk(conn: &mut DbConn, group: &str) -> ApiResult<Option<i64>> {
    let mut q = Sql::new();
    q.push("SELECT pk FROM resources WHERE res_type = 'Group' AND res_id = ")
        .text(group);
    Ok(load::<Pk>(conn, &q).map_err(db_error)?.pop().map(|r| r.pk))
}

/// The `member` search_reference row of `patient` on the Group's resource row.
fn insert_reference(conn: &mut DbConn, pk: i64, patient: &str) -> ApiResult<()> {
    let mut q = Sql::new();
    q.push(
        "INSERT INTO search_reference (resource_pk, res_type, param, grp, target_type, target_id, target_url) \
         VALUES (",
    )
    .int(pk)
    .push(", 'Group', 'member', 0, 'Patient', ")
    .text(patient)
    .push(", NULL)");
    execute(conn, &q).map_err(db_error)?;
    Ok(())
}

/// Write one member of Group `group` (which must be stored: its resource row carries the
/// search row): a new member gets a row and its search row; an existing one is updated in place.
pub fn put(conn: &mut DbConn, group: &str, m: &Member) -> ApiResult<()> {
    let mut q = Sql::new();
    q.push("UPDATE group_members SET inactive = ")
        .bind(Bind::Bool(m.inactive))
        .push(", period_start = ")
        .bind(opt(&m.period_start))
        .push(", period_end = ")
        .bind(opt(&m.period_end))
        .push(" WHERE group_id = ")
        .text(group)
        .push(" AND patient_id = ")
        .text(&m.patient_id);
    if execute(conn, &q).map_err(db_error)? > 0 {
        return Ok(());
    }
    let mut q = Sql::new();
    q.push(&format!(
        "INSERT INTO group_members (group_id, {COLUMNS}) VALUES ("
    ))
    .text(group)
    .push(", ")
    .text(&m.patient_id)
    .push(", ")
    .bind(Bind::Bool(m.inactive))
    .push(", ")
    .bind(opt(&m.period_start))
    .push(", ")
    .bind(opt(&m.period_end))
    .push(")");
    execute(conn, &q).map_err(db_error)?;
    if let Some(pk) = group_pk(conn, group)? {
        insert_reference(conn, pk, &m.patient_id)?;
    }
    Ok(())
}

/// Write several members of Group `group` (stored; each patient once): updates in place for
/// `existing` patients, one multi-row INSERT for the new rows and one for their search rows.
pub fn put_many(
    conn: &mut DbConn,
    group: &str,
    members: &[Member],
    existing: &std::collections::HashSet<String>,
) -> ApiResult<()> {
    let (old, new): (Vec<&Member>, Vec<&Member>) = members
        .iter()
        .partition(|m| existing.contains(&m.patient_id));
    for m in old {
        put(conn, group, m)?;
    }
    if new.is_empty() {
        return Ok(());
    }
    let pk = group_pk(conn, group)?;
    for chunk in new.chunks(200) {
        let mut q = Sql::new();
        q.push(&format!(
            "INSERT INTO group_members (group_id, {COLUMNS}) VALUES "
        ));
        for (n, m) in chunk.iter().enumerate() {
            q.push(if n == 0 { "(" } else { ", (" })
                .text(group)
                .push(", ")
                .text(&m.patient_id)
                .push(", ")
                .bind(Bind::Bool(m.inactive))
                .push(", ")
                .bind(opt(&m.period_start))
                .push(", ")
                .bind(opt(&m.period_end))
                .push(")");
        }
        execute(conn, &q).map_err(db_error)?;
        if let Some(pk) = pk {
            let mut q = Sql::new();
            q.push(
                "INSERT INTO search_reference (resource_pk, res_type, param, grp, target_type, target_id, target_url) VALUES ",
            );
            for (n, m) in chunk.iter().enumerate() {
                q.push(if n == 0 { "(" } else { ", (" })
                    .int(pk)
                    .push(", 'Group', 'member', 0, 'Patient', ")
                    .text(&m.patient_id)
                    .push(", NULL)");
            }
            execute(conn, &q).map_err(db_error)?;
        }
    }
    Ok(())
}

/// Replace every member of Group `group` (a whole-Group write: a client's PUT, an import of an
/// exported Group, a delete with `members` empty).
pub fn replace(conn: &mut DbConn, group: &str, members: &[Member]) -> ApiResult<()> {
    let pk = group_pk(conn, group)?;
    if let Some(pk) = pk {
        let mut q = Sql::new();
        q.push("DELETE FROM search_reference WHERE resource_pk = ")
            .int(pk)
            .push(" AND param = 'member'");
        execute(conn, &q).map_err(db_error)?;
    }
    let mut q = Sql::new();
    q.push("DELETE FROM group_members WHERE group_id = ")
        .text(group);
    execute(conn, &q).map_err(db_error)?;
    put_many(conn, group, members, &Default::default())
}

/// Whether Group `group` has members kept as rows.
pub fn has_rows(conn: &mut DbConn, group: &str) -> ApiResult<bool> {
    let mut q = Sql::new();
    q.push("SELECT CAST(1 AS BIGINT) AS pk FROM group_members WHERE group_id = ")
        .text(group)
        .push(" LIMIT 1");
    Ok(!load::<Pk>(conn, &q).map_err(db_error)?.is_empty())
}

/// Rebuild the `member` search rows of Group `group` on resource row `pk` from its rows
/// (`icm-fhir reindex`).
pub fn reindex(conn: &mut DbConn, group: &str, pk: i64) -> ApiResult<()> {
    let mut q = Sql::new();
    q.push("DELETE FROM search_reference WHERE resource_pk = ")
        .int(pk)
        .push(" AND param = 'member'");
    execute(conn, &q).map_err(db_error)?;
    for m in list(conn, group)? {
        insert_reference(conn, pk, &m.patient_id)?;
    }
    Ok(())
}

/// The current Group `content` with its members materialised from the rows (`member` in row
/// order, `quantity` the active ones); other resources, and Groups without rows, unchanged.
pub fn fill_value(conn: &mut DbConn, ty: &str, content: &mut Value) -> ApiResult<()> {
    if ty != "Group" {
        return Ok(());
    }
    let Some(id) = content["id"].as_str().map(str::to_string) else {
        return Ok(());
    };
    let rows = list(conn, &id)?;
    if rows.is_empty() {
        return Ok(());
    }
    let active = rows.iter().filter(|m| !m.inactive).count();
    content["quantity"] = json!(active);
    content["member"] = Value::Array(rows.iter().map(Member::to_json).collect());
    Ok(())
}

/// [`fill_value`] on stored JSON text.
pub fn fill(conn: &mut DbConn, ty: &str, content: Option<String>) -> ApiResult<Option<String>> {
    if ty != "Group" {
        return Ok(content);
    }
    let Some(mut v) = content
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    else {
        return Ok(content);
    };
    if !has_rows(conn, v["id"].as_str().unwrap_or_default())? {
        return Ok(content);
    }
    fill_value(conn, ty, &mut v)?;
    Ok(Some(v.to_string()))
}

/// [`fill`] on search results.
pub fn fill_found(conn: &mut DbConn, found: &mut [Found]) -> ApiResult<()> {
    for f in found.iter_mut().filter(|f| f.res_type == "Group") {
        if let Some(t) = fill(conn, "Group", Some(std::mem::take(&mut f.content)))? {
            f.content = t;
        }
    }
    Ok(())
}
