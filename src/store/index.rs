//! Search index rows: written by the one write path in the resource's transaction, and rebuilt
//! by `icm-fhir reindex`.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::ApiResult;
use crate::fhir::search::extract::extract;
use crate::store::backend::{db_error, DbConn};
use crate::store::schema::resources;
use crate::store::sql::{execute, Bind, Sql};

/// The index tables, for deletes.
const TABLES: &[&str] = &[
    "search_string",
    "search_token",
    "search_date",
    "search_reference",
    "search_number",
    "search_quantity",
    "search_uri",
];

/// Rows per multi-row INSERT (well under SQLite's bound-variable limit).
const CHUNK: usize = 200;

fn opt(v: &Option<String>) -> Bind {
    match v {
        Some(s) => Bind::Text(s.clone()),
        None => Bind::Null,
    }
}

/// INSERT INTO table (resource_pk, res_type, param, cols…) VALUES … for each chunk of rows.
fn insert_rows(
    conn: &mut DbConn,
    table: &str,
    cols: &str,
    ty: &str,
    rows: Vec<(i64, String, Vec<Bind>)>,
) -> ApiResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut q = Sql::new();
        q.push("INSERT INTO ")
            .push(table)
            .push(" (resource_pk, res_type, param, ")
            .push(cols)
            .push(") VALUES ");
        for (i, (pk, param, vals)) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .int(*pk)
                .push(", ")
                .text(ty)
                .push(", ")
                .text(param.clone());
            for v in vals {
                q.push(", ").bind(v.clone());
            }
            q.push(")");
        }
        execute(conn, &q).map_err(db_error)?;
    }
    Ok(())
}

/// Remove every index row of a resource row.
pub fn delete_index(conn: &mut DbConn, pk: i64) -> ApiResult<()> {
    if crate::store::sql::is_pg(conn) {
        // One round trip: data-modifying CTEs.
        let mut q = Sql::new();
        q.push("WITH ");
        for (n, t) in TABLES[..TABLES.len() - 1].iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.push(&format!("d{n} AS (DELETE FROM {t} WHERE resource_pk = "))
                .int(pk)
                .push(")");
        }
        q.push(&format!(
            " DELETE FROM {} WHERE resource_pk = ",
            TABLES[TABLES.len() - 1]
        ))
        .int(pk);
        execute(conn, &q).map_err(db_error)?;
        return Ok(());
    }
    for t in TABLES {
        let mut q = Sql::new();
        q.push("DELETE FROM ")
            .push(t)
            .push(" WHERE resource_pk = ")
            .int(pk);
        execute(conn, &q).map_err(db_error)?;
    }
    Ok(())
}

/// Replace the index rows of resource row `pk` (type `ty`) with those of `resource`
/// (`None`: the resource was deleted, so it gets none). Call inside the write transaction.
pub fn write_index(
    conn: &mut DbConn,
    pk: i64,
    ty: &str,
    resource: Option<&Value>,
) -> ApiResult<()> {
    delete_index(conn, pk)?;
    insert_index(conn, pk, ty, resource)
}

/// Index rows of a row that has none yet (a create: nothing to delete first).
pub fn insert_index(
    conn: &mut DbConn,
    pk: i64,
    ty: &str,
    resource: Option<&Value>,
) -> ApiResult<()> {
    match resource {
        Some(r) => insert_index_bulk(conn, ty, &[(pk, r)]),
        None => Ok(()),
    }
}

/// Index rows of several new rows of one type, in as few multi-row INSERTs as possible
/// (the audit writer stores its batches this way).
pub fn insert_index_bulk(conn: &mut DbConn, ty: &str, items: &[(i64, &Value)]) -> ApiResult<()> {
    let mut strings = Vec::new();
    let mut tokens = Vec::new();
    let mut dates = Vec::new();
    let mut references = Vec::new();
    let mut numbers = Vec::new();
    let mut quantities = Vec::new();
    let mut uris = Vec::new();
    for (pk, resource) in items {
        let rows = extract(ty, resource);
        let pk = *pk;
        strings.extend(rows.strings.into_iter().map(|r| (pk, r)));
        tokens.extend(rows.tokens.into_iter().map(|r| (pk, r)));
        dates.extend(rows.dates.into_iter().map(|r| (pk, r)));
        references.extend(rows.references.into_iter().map(|r| (pk, r)));
        numbers.extend(rows.numbers.into_iter().map(|r| (pk, r)));
        quantities.extend(rows.quantities.into_iter().map(|r| (pk, r)));
        uris.extend(rows.uris.into_iter().map(|r| (pk, r)));
    }
    let ins = |conn: &mut DbConn, table: &str, cols: &str, r: Vec<(i64, String, Vec<Bind>)>| {
        if r.is_empty() {
            Ok(())
        } else {
            insert_rows(conn, table, cols, ty, r)
        }
    };
    ins(
        conn,
        "search_string",
        "value_norm, value_exact",
        strings
            .into_iter()
            .map(|(pk, r)| (pk, r.param, vec![Bind::Text(r.norm), Bind::Text(r.exact)]))
            .collect(),
    )?;
    ins(
        conn,
        "search_token",
        "system, code, display_norm",
        tokens
            .into_iter()
            .map(|(pk, r)| {
                (
                    pk,
                    r.param,
                    vec![opt(&r.system), opt(&r.code), opt(&r.display)],
                )
            })
            .collect(),
    )?;
    ins(
        conn,
        "search_date",
        "low, high",
        dates
            .into_iter()
            .map(|(pk, r)| (pk, r.param, vec![Bind::Int(r.low), Bind::Int(r.high)]))
            .collect(),
    )?;
    ins(
        conn,
        "search_reference",
        "target_type, target_id, target_url",
        references
            .into_iter()
            .map(|(pk, r)| {
                (
                    pk,
                    r.param,
                    vec![opt(&r.target_type), opt(&r.target_id), opt(&r.target_url)],
                )
            })
            .collect(),
    )?;
    ins(
        conn,
        "search_number",
        "value",
        numbers
            .into_iter()
            .map(|(pk, r)| (pk, r.param, vec![Bind::Float(r.value)]))
            .collect(),
    )?;
    ins(
        conn,
        "search_quantity",
        "value, system, code, unit",
        quantities
            .into_iter()
            .map(|(pk, r)| {
                (
                    pk,
                    r.param,
                    vec![
                        Bind::Float(r.value),
                        opt(&r.system),
                        opt(&r.code),
                        opt(&r.unit),
                    ],
                )
            })
            .collect(),
    )?;
    ins(
        conn,
        "search_uri",
        "value",
        uris.into_iter()
            .map(|(pk, r)| (pk, r.param, vec![Bind::Text(r.value)]))
            .collect(),
    )?;
    Ok(())
}

/// Rebuild the index rows of every current resource (all types, or one), in batches of
/// `batch` resources per transaction. Returns the number of resources indexed.
pub fn reindex(store: &crate::store::Store, only_type: Option<&str>, batch: i64) -> ApiResult<u64> {
    let mut after = 0i64;
    let mut n = 0u64;
    loop {
        let done = store.write_tx(|conn| {
            let mut q = resources::table
                .filter(resources::pk.gt(after))
                .select((
                    resources::pk,
                    resources::res_type,
                    resources::deleted,
                    resources::content,
                ))
                .order(resources::pk.asc())
                .limit(batch)
                .into_boxed();
            if let Some(t) = only_type {
                q = q.filter(resources::res_type.eq(t.to_string()));
            }
            let rows: Vec<(i64, String, bool, Option<String>)> = q.load(conn).map_err(db_error)?;
            for (pk, ty, deleted, content) in &rows {
                let v = content
                    .as_deref()
                    .filter(|_| !*deleted)
                    .and_then(|t| serde_json::from_str::<Value>(t).ok());
                write_index(conn, *pk, ty, v.as_ref())?;
            }
            Ok(rows.last().map(|r| (r.0, rows.len())))
        })?;
        match done {
            Some((last, len)) => {
                after = last;
                n += len as u64;
            }
            None => return Ok(n),
        }
    }
}
