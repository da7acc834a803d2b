//! Sort keys and keyset paging: the SQL value of each sort key, page tokens that carry the
//! boundary row's keys and pk, and the keyset condition that continues after (or before) it.
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::fhir::search::params::ParamType;
use crate::fhir::search::query::SortKey;
use crate::fhir::search::values::{MAX_INSTANT, MIN_INSTANT};
use crate::store::audit;
use crate::store::sql::Sql;

use super::{Row, TOP};

/// How a sort key's value is read back (for page tokens).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum KeyKind {
    Int,
    Text,
    Float,
}

pub(super) fn key_kind(k: &SortKey) -> KeyKind {
    match k.param.as_str() {
        "_lastUpdated" => return KeyKind::Int,
        "_id" => return KeyKind::Text,
        _ => {}
    }
    match k.ptype {
        ParamType::Date => KeyKind::Int,
        ParamType::Number | ParamType::Quantity => KeyKind::Float,
        _ => KeyKind::Text,
    }
}

/// SQL for a sort key's value on row `r` (missing values sort last in either direction).
pub(super) fn key_expr(q: &mut Sql, ty: &str, k: &SortKey) {
    let agg = if k.descending { "MAX" } else { "MIN" };
    match k.param.as_str() {
        "_lastUpdated" => {
            q.push("r.last_updated");
            return;
        }
        "_id" => {
            q.push("r.res_id");
            return;
        }
        _ => {}
    }
    // The key's value: an audit_log column (its first value), else the MIN/MAX of the index rows.
    if audit::is_audit_log(ty) {
        let col = audit::column(&k.param).unwrap_or("res_id");
        q.push(&format!("COALESCE(r.{col}, "));
    } else {
        let (table, col) = match k.ptype {
            ParamType::Date => ("search_date", "low"),
            ParamType::String => ("search_string", "value_norm"),
            ParamType::Token => ("search_token", "code"),
            ParamType::Reference => ("search_reference", "target_id"),
            ParamType::Number => ("search_number", "value"),
            ParamType::Quantity => ("search_quantity", "value"),
            _ => ("search_uri", "value"),
        };
        q.push(&format!(
            "COALESCE((SELECT {agg}(k.{col}) FROM {table} k WHERE k.resource_pk = r.pk AND k.param = "
        ))
        .text(k.param.clone())
        .push("), ");
    }
    // Missing values sort last either way.
    match (key_kind(k), k.descending) {
        (KeyKind::Int, false) => q.int(MAX_INSTANT),
        (KeyKind::Int, true) => q.int(MIN_INSTANT),
        (KeyKind::Float, false) => q.float(f64::MAX),
        (KeyKind::Float, true) => q.float(f64::MIN),
        (KeyKind::Text, false) => q.text(TOP.to_string()),
        (KeyKind::Text, true) => q.text(String::new()),
    };
    q.push(")");
}

/// A decoded page token: direction (true = after) and the boundary row's keys then pk.
pub(super) fn decode_page(token: &str, keys: &[SortKey]) -> ApiResult<(bool, Vec<Value>)> {
    let bad = || {
        ApiError::invalid_at(
            format!("_page '{token}' is not a page token from a link of this server"),
            "_page",
        )
    };
    let (dir, rest) = token.split_at_checked(1).ok_or_else(bad)?;
    let after = match dir {
        "a" => true,
        "b" => false,
        _ => return Err(bad()),
    };
    let v: Vec<Value> = serde_json::from_str(rest).map_err(|_| bad())?;
    if v.len() != keys.len() + 1 || !v[keys.len()].is_i64() {
        return Err(bad());
    }
    for (k, x) in keys.iter().zip(&v) {
        let ok = match key_kind(k) {
            KeyKind::Int => x.is_i64(),
            KeyKind::Float => x.is_number(),
            KeyKind::Text => x.is_string(),
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok((after, v))
}

pub(super) fn bind_json(q: &mut Sql, kind: KeyKind, v: &Value) {
    match kind {
        KeyKind::Int => q.int(v.as_i64().unwrap_or_default()),
        KeyKind::Float => q.float(v.as_f64().unwrap_or_default()),
        KeyKind::Text => q.text(v.as_str().unwrap_or_default()),
    };
}

/// Keyset condition: rows strictly after (`forward`) the boundary in the sort order.
pub(super) fn keyset(q: &mut Sql, keys: &[SortKey], vals: &[Value], forward: bool) {
    // (k1 op v1) OR (k1 = v1 AND ((k2 op v2) OR (k2 = v2 AND pk op vpk)))
    fn go(q: &mut Sql, keys: &[SortKey], vals: &[Value], forward: bool, n: usize) {
        if n == keys.len() {
            q.push(if forward { "q.pk > " } else { "q.pk < " });
            q.int(vals[n].as_i64().unwrap_or_default());
            return;
        }
        let kind = key_kind(&keys[n]);
        let col = format!(
            "q.k{}_{}",
            n + 1,
            match kind {
                KeyKind::Int => "i",
                KeyKind::Text => "t",
                KeyKind::Float => "f",
            }
        );
        let gt = forward != keys[n].descending;
        q.push("(").push(&col).push(if gt { " > " } else { " < " });
        bind_json(q, kind, &vals[n]);
        q.push(" OR (").push(&col).push(" = ");
        bind_json(q, kind, &vals[n]);
        q.push(" AND (");
        go(q, keys, vals, forward, n + 1);
        q.push(")))");
    }
    go(q, keys, vals, forward, 0);
}

pub(super) fn encode_page(after: bool, row: &Row, keys: &[SortKey]) -> String {
    let mut v: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| row.key(n, key_kind(k)))
        .collect();
    v.push(json!(row.pk));
    format!("{}{}", if after { "a" } else { "b" }, Value::Array(v))
}
