//! Search SQL: a `SearchQuery` becomes one statement over `resources` (current versions only)
//! that intersects lookups in the search_* index tables, ordered by the sort keys and the row
//! pk, paged by keyset (the last row's keys), never OFFSET.
//!
//! Stable API used by other modules:
//! - [`find_ids`]`(conn, ty, query_string) -> ApiResult<Vec<String>>`: ids of every current,
//!   non-deleted match (conditional create/update/delete, conditional references). Unknown or
//!   malformed parameters are a 400 here, since guessing would change what gets written.
//! - [`search`]`(conn, &query, count) -> ApiResult<SearchPage>`: one page plus included resources.
//! - [`referrers`]`(conn, target_type, target_id) -> ApiResult<Vec<(String, String)>>`: current
//!   resources that reference a resource (type, id).
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::QueryableByName;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::now_micros;
use crate::fhir::search::params::{ParamType, SearchParams};
use crate::fhir::search::query::{
    Filter, Include, Modifier, Prefix, SearchQuery, SearchValue, SortKey,
};
use crate::fhir::search::values::fold;
use crate::fhir::search::values::{MAX_INSTANT, MIN_INSTANT};
use crate::store::audit;
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{load, Sql};

/// Upper bound appended to a prefix for range scans (sorts after any other character).
const TOP: char = '\u{10FFFF}';
/// Most resources added per `_include`/`_revinclude` step.
pub const MAX_INCLUDES: i64 = 1000;
/// Rounds of `:iterate`.
const MAX_ITERATE: usize = 3;

/// A current resource found by a search.
#[derive(Debug, Clone)]
pub struct Found {
    pub pk: i64,
    pub res_type: String,
    pub res_id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub content: String,
}

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub matches: Vec<Found>,
    pub included: Vec<Found>,
    pub total: Option<i64>,
    /// Page tokens for the next and previous pages, when there are such pages.
    pub next: Option<String>,
    pub previous: Option<String>,
}

fn table_of(p: ParamType) -> Option<&'static str> {
    Some(match p {
        ParamType::String => "search_string",
        ParamType::Token => "search_token",
        ParamType::Date => "search_date",
        ParamType::Reference => "search_reference",
        ParamType::Number => "search_number",
        ParamType::Quantity => "search_quantity",
        ParamType::Uri => "search_uri",
        ParamType::Composite | ParamType::Special => return None,
    })
}

/// Builds predicates with unique aliases.
struct Builder {
    n: u32,
    /// The query's compartment: rows of patient-compartment types reached through a chain or
    /// `_has` must be in it too, so a chain cannot probe other patients' data.
    compartment: Option<Vec<String>>,
}

impl Builder {
    fn alias(&mut self, p: &str) -> String {
        self.n += 1;
        format!("{p}{}", self.n)
    }

    fn prefix_range(q: &mut Sql, col: &str, prefix: &str) {
        let mut hi = prefix.to_string();
        hi.push(TOP);
        q.push(col).push(" >= ").text(prefix).push(" AND ");
        q.push(col).push(" < ").text(hi);
    }

    fn like_escape(s: &str) -> String {
        let mut o = String::from("%");
        for c in s.chars() {
            if matches!(c, '%' | '_' | '\\') {
                o.push('\\');
            }
            o.push(c);
        }
        o.push('%');
        o
    }

    /// Date condition on a target range given by two column expressions.
    fn date_cond(q: &mut Sql, lo: &str, hi: &str, prefix: Prefix, sl: i64, sh: i64) {
        q.push("(");
        match prefix {
            Prefix::Eq => {
                // `lo < sh` is implied (lo < hi <= sh) but bounds the index range scan on lo.
                q.push(lo)
                    .push(" >= ")
                    .int(sl)
                    .push(" AND ")
                    .push(lo)
                    .push(" < ")
                    .int(sh);
                q.push(" AND ").push(hi).push(" <= ").int(sh);
            }
            Prefix::Ne => {
                q.push("NOT (").push(lo).push(" >= ").int(sl);
                q.push(" AND ").push(hi).push(" <= ").int(sh).push(")");
            }
            Prefix::Gt => {
                q.push(hi).push(" > ").int(sh);
            }
            Prefix::Lt => {
                q.push(lo).push(" < ").int(sl);
            }
            Prefix::Ge => {
                q.push(hi).push(" > ").int(sl);
            }
            Prefix::Le => {
                q.push(lo).push(" < ").int(sh);
            }
            Prefix::Sa => {
                q.push(lo).push(" >= ").int(sh);
            }
            Prefix::Eb => {
                q.push(hi).push(" <= ").int(sl);
            }
            Prefix::Ap => {
                let d = (now_micros().saturating_sub(sl)).abs() / 10;
                q.push(lo).push(" < ").int(sh.saturating_add(d));
                q.push(" AND ")
                    .push(hi)
                    .push(" > ")
                    .int(sl.saturating_sub(d));
            }
        }
        q.push(")");
    }

    fn num_cond(q: &mut Sql, col: &str, prefix: Prefix, v: f64, lo: f64, hi: f64) {
        q.push("(");
        match prefix {
            Prefix::Eq => {
                q.push(col)
                    .push(" >= ")
                    .float(lo)
                    .push(" AND ")
                    .push(col)
                    .push(" < ")
                    .float(hi);
            }
            Prefix::Ne => {
                q.push("NOT (").push(col).push(" >= ").float(lo);
                q.push(" AND ").push(col).push(" < ").float(hi).push(")");
            }
            Prefix::Gt | Prefix::Sa => {
                q.push(col).push(" > ").float(v);
            }
            Prefix::Lt | Prefix::Eb => {
                q.push(col).push(" < ").float(v);
            }
            Prefix::Ge => {
                q.push(col).push(" >= ").float(v);
            }
            Prefix::Le => {
                q.push(col).push(" <= ").float(v);
            }
            Prefix::Ap => {
                let d = (v * 0.1).abs();
                q.push(col)
                    .push(" >= ")
                    .float(v - d)
                    .push(" AND ")
                    .push(col)
                    .push(" <= ")
                    .float(v + d);
            }
        }
        q.push(")");
    }

    /// The condition one value puts on an index row aliased `i`.
    fn value_cond(q: &mut Sql, i: &str, modifier: &Modifier, v: &SearchValue) {
        let c = |col: &str| format!("{i}.{col}");
        match v {
            SearchValue::String(s) => match modifier {
                Modifier::Exact => {
                    q.push(&c("value_exact")).push(" = ").text(s.clone());
                }
                Modifier::Contains => {
                    q.push(&c("value_norm"))
                        .push(" LIKE ")
                        .text(Self::like_escape(s))
                        .push(" ESCAPE '\\'");
                }
                _ => Self::prefix_range(q, &c("value_norm"), s),
            },
            SearchValue::Token { system, code } => {
                q.push("(");
                let mut first = true;
                let mut and = |q: &mut Sql| {
                    if !first {
                        q.push(" AND ");
                    }
                    first = false;
                };
                match system {
                    None => {}
                    Some(None) => {
                        and(q);
                        q.push(&c("system")).push(" IS NULL");
                    }
                    Some(Some(s)) => {
                        and(q);
                        q.push(&c("system")).push(" = ").text(s.clone());
                    }
                }
                if let Some(code) = code {
                    and(q);
                    q.push(&c("code")).push(" = ").text(code.clone());
                }
                if first {
                    q.push("1 = 1");
                }
                q.push(")");
            }
            SearchValue::Text(s) => {
                q.push("(");
                Self::prefix_range(q, &c("display_norm"), s);
                q.push(")");
            }
            SearchValue::Date { prefix, low, high } => {
                Self::date_cond(q, &c("low"), &c("high"), *prefix, *low, *high)
            }
            SearchValue::Number {
                prefix,
                value,
                low,
                high,
            } => Self::num_cond(q, &c("value"), *prefix, *value, *low, *high),
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            } => {
                q.push("(");
                Self::num_cond(q, &c("value"), *prefix, *value, *low, *high);
                if let Some(s) = system {
                    q.push(" AND ")
                        .push(&c("system"))
                        .push(" = ")
                        .text(s.clone());
                }
                if let Some(k) = code {
                    q.push(" AND (")
                        .push(&c("code"))
                        .push(" = ")
                        .text(k.clone());
                    q.push(" OR ")
                        .push(&c("unit"))
                        .push(" = ")
                        .text(k.clone())
                        .push(")");
                }
                q.push(")");
            }
            SearchValue::Reference { ty, id, url } => {
                q.push("(");
                match (url, ty, id) {
                    (Some(u), Some(t), Some(id)) => {
                        q.push(&c("target_url")).push(" = ").text(u.clone());
                        q.push(" OR (")
                            .push(&c("target_id"))
                            .push(" = ")
                            .text(id.clone());
                        q.push(" AND ")
                            .push(&c("target_type"))
                            .push(" = ")
                            .text(t.clone());
                        q.push(")");
                    }
                    (Some(u), _, _) => {
                        q.push(&c("target_url")).push(" = ").text(u.clone());
                    }
                    (None, Some(t), Some(id)) => {
                        q.push(&c("target_id")).push(" = ").text(id.clone());
                        q.push(" AND ")
                            .push(&c("target_type"))
                            .push(" = ")
                            .text(t.clone());
                    }
                    (None, None, Some(id)) => {
                        q.push(&c("target_id")).push(" = ").text(id.clone());
                    }
                    _ => {
                        q.push("1 = 0");
                    }
                }
                q.push(")");
            }
            SearchValue::Uri(u) => match modifier {
                Modifier::Below => {
                    q.push("(");
                    Self::prefix_range(q, &c("value"), u);
                    q.push(")");
                }
                Modifier::Above => {
                    q.push("substr(").text(u.clone()).push(", 1, length(");
                    q.push(&c("value")).push(")) = ").push(&c("value"));
                }
                Modifier::Contains => {
                    q.push(&c("value"))
                        .push(" LIKE ")
                        .text(Self::like_escape(u))
                        .push(" ESCAPE '\\'");
                }
                _ => {
                    q.push(&c("value")).push(" = ").text(u.clone());
                }
            },
        }
    }

    /// A predicate on the resource row aliased `a` (of type `ty`).
    fn filter(&mut self, q: &mut Sql, f: &Filter, ty: &str, a: &str) {
        if ty == audit::TYPE && matches!(f, Filter::Param { .. } | Filter::Missing { .. }) {
            return Self::audit_filter(q, f, a);
        }
        match f {
            Filter::Id { ids, negate } => {
                q.push(a).push(".res_id ");
                if *negate {
                    q.push("NOT ");
                }
                q.push("IN ").text_list(ids);
            }
            Filter::LastUpdated(values) => {
                q.push("(");
                for (n, v) in values.iter().enumerate() {
                    if n > 0 {
                        q.push(" OR ");
                    }
                    if let SearchValue::Date { prefix, low, high } = v {
                        let lo = format!("{a}.last_updated");
                        let hi = format!("({a}.last_updated + 1)");
                        Self::date_cond(q, &lo, &hi, *prefix, *low, *high);
                    } else {
                        q.push("1 = 0");
                    }
                }
                q.push(")");
            }
            Filter::Missing {
                param,
                ptype,
                missing,
            } => {
                if matches!(param.as_str(), "_id" | "_lastUpdated") {
                    q.push(if *missing { "1 = 0" } else { "1 = 1" });
                    return;
                }
                let Some(table) = table_of(*ptype) else {
                    q.push("1 = 0");
                    return;
                };
                let i = self.alias("m");
                q.push(a).push(".pk ");
                if *missing {
                    q.push("NOT ");
                }
                q.push(&format!(
                    "IN (SELECT {i}.resource_pk FROM {table} {i} WHERE {i}.res_type = "
                ))
                .text(ty)
                .push(&format!(" AND {i}.param = "))
                .text(param.clone())
                .push(")");
            }
            Filter::Param {
                param,
                ptype,
                modifier,
                values,
            } => {
                let Some(table) = table_of(*ptype) else {
                    q.push("1 = 0");
                    return;
                };
                let i = self.alias("i");
                q.push(a).push(".pk ");
                if *modifier == Modifier::Not {
                    q.push("NOT ");
                }
                q.push(&format!(
                    "IN (SELECT {i}.resource_pk FROM {table} {i} WHERE {i}.res_type = "
                ))
                .text(ty)
                .push(&format!(" AND {i}.param = "))
                .text(param.clone())
                .push(" AND (");
                for (n, v) in values.iter().enumerate() {
                    if n > 0 {
                        q.push(" OR ");
                    }
                    Self::value_cond(q, &i, modifier, v);
                }
                q.push("))");
            }
            Filter::Chain { param, targets } => {
                let i = self.alias("c");
                let t = self.alias("t");
                q.push(&format!(
                    "{a}.pk IN (SELECT {i}.resource_pk FROM search_reference {i} \
                     JOIN resources {t} ON {t}.res_type = {i}.target_type AND {t}.res_id = {i}.target_id \
                     WHERE {i}.res_type = "
                ))
                .text(ty)
                .push(&format!(" AND {i}.param = "))
                .text(param.clone())
                .push(&format!(" AND NOT {t}.deleted AND ("));
                for (n, (tt, inner)) in targets.iter().enumerate() {
                    if n > 0 {
                        q.push(" OR ");
                    }
                    q.push(&format!("({i}.target_type = "))
                        .text(tt.clone())
                        .push(" AND ");
                    self.filter(q, inner, tt, &t);
                    self.inner_compartment(q, tt, &t);
                    q.push(")");
                }
                q.push("))");
            }
            Filter::Has {
                source_type,
                param,
                inner,
            } => {
                let i = self.alias("h");
                let t = self.alias("s");
                q.push(&format!(
                    "{a}.res_id IN (SELECT {i}.target_id FROM search_reference {i} \
                     JOIN resources {t} ON {t}.pk = {i}.resource_pk WHERE {i}.res_type = "
                ))
                .text(source_type.clone())
                .push(&format!(" AND {i}.param = "))
                .text(param.clone())
                .push(&format!(" AND {i}.target_type = "))
                .text(ty)
                .push(&format!(" AND NOT {t}.deleted AND "));
                self.filter(q, inner, source_type, &t);
                self.inner_compartment(q, source_type, &t);
                q.push(")");
            }
        }
    }

    /// A parameter predicate on an audit_log row `a`: the parameter's column (its first value)
    /// or a row of audit_value (its further values).
    fn audit_filter(q: &mut Sql, f: &Filter, a: &str) {
        let (param, modifier, values) = match f {
            Filter::Missing { param, missing, .. } => {
                match audit::column(param) {
                    Some(col) => {
                        q.push(&format!("{a}.{col} IS "));
                        q.push(if *missing { "NULL" } else { "NOT NULL" });
                    }
                    None => {
                        q.push(if *missing { "1 = 1" } else { "1 = 0" });
                    }
                }
                return;
            }
            Filter::Param {
                param,
                modifier,
                values,
                ..
            } => (param, modifier, values),
            _ => return,
        };
        let Some(col) = audit::column(param) else {
            q.push("1 = 0");
            return;
        };
        if *modifier == Modifier::Not {
            q.push("NOT ");
        }
        q.push("(");
        for (n, v) in values.iter().enumerate() {
            if n > 0 {
                q.push(" OR ");
            }
            Self::audit_value(q, a, param, col, modifier, v);
        }
        q.push(")");
    }

    /// One value's condition on the column `col` of row `a`, or on a further value.
    fn audit_value(
        q: &mut Sql,
        a: &str,
        param: &str,
        col: &str,
        modifier: &Modifier,
        v: &SearchValue,
    ) {
        // `cond(expr)`: the condition on one stored value (a column or audit_value.value).
        let both = |q: &mut Sql, cond: &dyn Fn(&mut Sql, &str)| {
            q.push(&format!("(({a}.{col} IS NOT NULL AND "));
            cond(q, &format!("{a}.{col}"));
            q.push(&format!(
                ") OR {a}.pk IN (SELECT x.audit_pk FROM audit_value x WHERE x.param = "
            ))
            .text(param)
            .push(" AND ");
            cond(q, "x.value");
            q.push("))");
        };
        match v {
            SearchValue::Date { prefix, low, high } => {
                let hi = format!("({a}.recorded + 1)");
                Self::date_cond(q, &format!("{a}.recorded"), &hi, *prefix, *low, *high);
            }
            SearchValue::Reference { ty, id, url } => {
                let want_type = if param == "patient" {
                    Some("Patient".to_string())
                } else {
                    None
                };
                match (ty, id) {
                    (Some(t), Some(_)) if param == "patient" && t != "Patient" => {
                        q.push("1 = 0");
                    }
                    (_, Some(id)) if param == "patient" => {
                        let id = id.clone();
                        both(q, &|q, e| {
                            q.push(e).push(" = ").text(id.clone());
                        });
                    }
                    (Some(t), Some(id)) => {
                        let key = format!("{t}/{id}");
                        let url = url.clone();
                        both(q, &|q, e| {
                            q.push(e).push(" = ").text(key.clone());
                            if let Some(u) = &url {
                                q.push(" OR ").push(e).push(" = ").text(u.clone());
                            }
                        });
                    }
                    (None, Some(id)) => {
                        let pat = format!("%/{}", Self::like_escape(id).trim_matches('%'));
                        both(q, &|q, e| {
                            q.push(e)
                                .push(" LIKE ")
                                .text(pat.clone())
                                .push(" ESCAPE '\\'");
                        });
                    }
                    _ => match url {
                        Some(u) if want_type.is_none() => {
                            let u = u.clone();
                            both(q, &|q, e| {
                                q.push(e).push(" = ").text(u.clone());
                            });
                        }
                        _ => {
                            q.push("1 = 0");
                        }
                    },
                }
            }
            SearchValue::Token { system, code } => {
                let coded = param == "subtype";
                match system {
                    // altid, action and outcome are plain codes/strings: no system.
                    Some(Some(_)) if !coded => {
                        q.push("1 = 0");
                        return;
                    }
                    Some(Some(sys)) => {
                        // A system applies to the first subtype (the one with a system column).
                        q.push(&format!("({a}.subtype_system = ")).text(sys.clone());
                        match code {
                            Some(c) => {
                                q.push(&format!(" AND {a}.subtype = ")).text(c.clone());
                            }
                            None => {
                                q.push(&format!(" AND {a}.subtype IS NOT NULL"));
                            }
                        }
                        q.push(")");
                        return;
                    }
                    Some(None) if coded => {
                        q.push(&format!("({a}.subtype_system IS NULL AND "));
                        match code {
                            Some(c) => q.push(&format!("{a}.subtype = ")).text(c.clone()),
                            None => q.push(&format!("{a}.subtype IS NOT NULL")),
                        };
                        q.push(")");
                        return;
                    }
                    _ => {}
                }
                match code {
                    Some(c) => {
                        let c = c.clone();
                        both(q, &|q, e| {
                            q.push(e).push(" = ").text(c.clone());
                        });
                    }
                    None => {
                        q.push(&format!("{a}.{col} IS NOT NULL"));
                    }
                }
            }
            SearchValue::String(s) => {
                let s = fold(s);
                match modifier {
                    Modifier::Exact => both(q, &|q, e| {
                        q.push(e).push(" = ").text(s.clone());
                    }),
                    Modifier::Contains => {
                        let pat = Self::like_escape(&s);
                        both(q, &|q, e| {
                            q.push(e)
                                .push(" LIKE ")
                                .text(pat.clone())
                                .push(" ESCAPE '\\'");
                        })
                    }
                    _ => both(q, &|q, e| Self::prefix_range(q, e, &s)),
                }
            }
            // :text and the other value kinds do not apply to these parameters.
            _ => {
                q.push("1 = 0");
            }
        }
    }

    /// ` AND <compartment>` on a row reached through a chain or `_has`, when the query has a
    /// compartment and `ty` holds patient data.
    fn inner_compartment(&mut self, q: &mut Sql, ty: &str, a: &str) {
        let Some(p) = self.compartment.clone() else {
            return;
        };
        if ty == "Patient"
            || !SearchParams::get()
                .patient_compartment_params(ty)
                .is_empty()
        {
            q.push(" AND ");
            self.compartment(q, ty, a, &p);
        }
    }

    /// The Patient-compartment restriction on row `a` of type `ty`.
    fn compartment(&mut self, q: &mut Sql, ty: &str, a: &str, patients: &[String]) {
        if patients.is_empty() {
            q.push("1 = 0");
            return;
        }
        if ty == "Patient" {
            q.push(a).push(".res_id IN ").text_list(patients);
            return;
        }
        if ty == audit::TYPE {
            q.push(&format!("({a}.patient IN ")).text_list(patients);
            q.push(&format!(
                " OR {a}.pk IN (SELECT x.audit_pk FROM audit_value x WHERE x.param = 'patient' AND x.value IN "
            ))
            .text_list(patients)
            .push("))");
            return;
        }
        let params = SearchParams::get().patient_compartment_params(ty);
        if params.is_empty() {
            q.push("1 = 0");
            return;
        }
        let c = self.alias("p");
        q.push(&format!(
            "{a}.pk IN (SELECT {c}.resource_pk FROM search_reference {c} WHERE {c}.res_type = "
        ))
        .text(ty)
        .push(&format!(" AND {c}.param IN "))
        .text_list(params)
        .push(&format!(
            " AND {c}.target_type = 'Patient' AND {c}.target_id IN "
        ))
        .text_list(patients)
        .push(")");
    }
}

/// How a sort key's value is read back (for page tokens).
#[derive(Clone, Copy, PartialEq)]
enum KeyKind {
    Int,
    Text,
    Float,
}

fn key_kind(k: &SortKey) -> KeyKind {
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
fn key_expr(q: &mut Sql, ty: &str, k: &SortKey) {
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
    if ty == audit::TYPE {
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

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    pk: i64,
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    res_id: String,
    #[diesel(sql_type = BigInt)]
    version_id: i64,
    #[diesel(sql_type = BigInt)]
    last_updated: i64,
    #[diesel(sql_type = Nullable<Text>)]
    content: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    k1_i: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    k1_t: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    k1_f: Option<f64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    k2_i: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    k2_t: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    k2_f: Option<f64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    k3_i: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    k3_t: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    k3_f: Option<f64>,
}

impl Row {
    fn key(&self, n: usize, kind: KeyKind) -> Value {
        let (i, t, f) = match n {
            0 => (self.k1_i, &self.k1_t, self.k1_f),
            1 => (self.k2_i, &self.k2_t, self.k2_f),
            _ => (self.k3_i, &self.k3_t, self.k3_f),
        };
        match kind {
            KeyKind::Int => json!(i),
            KeyKind::Text => json!(t),
            KeyKind::Float => json!(f),
        }
    }
    fn found(self) -> Found {
        Found {
            pk: self.pk,
            res_type: self.res_type,
            res_id: self.res_id,
            version_id: self.version_id,
            last_updated: self.last_updated,
            content: self.content.unwrap_or_default(),
        }
    }
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct PkRow {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

/// The WHERE clause (without the keyset) for the matches of a query, on `resources r`.
fn where_clause(q: &SearchQuery) -> Sql {
    let mut s = Sql::new();
    let mut b = Builder {
        n: 0,
        compartment: q.compartment.clone(),
    };
    s.push("r.res_type = ")
        .text(q.ty.clone())
        .push(" AND NOT r.deleted");
    for f in &q.filters {
        s.push(" AND ");
        b.filter(&mut s, f, &q.ty, "r");
    }
    if let Some(p) = &q.compartment {
        s.push(" AND ");
        b.compartment(&mut s, &q.ty, "r", p);
    }
    s
}

/// The filter that can drive a search from its index table alone, if any: a selective parameter
/// filter on one of the search_* tables, when nothing else in the query needs the resource row
/// itself (`_id`, `_lastUpdated`, `_has`, a Patient compartment, `_id`/`_lastUpdated` sort keys)
/// and no chain is better left to the planner.
/// Index rows exist only for current, non-deleted resources of their `res_type`, so the
/// resource row adds nothing to such a search but one probe per match.
fn driving_filter(q: &SearchQuery) -> Option<usize> {
    if q.ty == audit::TYPE
        || (q.compartment.is_some() && q.ty == "Patient")
        || q.sort
            .iter()
            .any(|k| matches!(k.param.as_str(), "_id" | "_lastUpdated"))
        || q.filters.iter().any(|f| {
            matches!(
                f,
                Filter::Id { .. } | Filter::LastUpdated(_) | Filter::Has { .. }
            )
        })
    {
        return None;
    }
    if q.filters.iter().any(|f| matches!(f, Filter::Chain { .. })) {
        return None;
    }
    // Only filters that are selective by their nature: a reference names one resource (a
    // patient's tasks, an owner's worklist), a date equal to at most a month is a short span.
    // Broad ones (a name prefix, a status, a year) are better left to the planner, which can
    // walk `resources` in pk order and stop at the page's end.
    const MONTH: i64 = 31 * 24 * 3600 * 1_000_000;
    let selective = |f: &Filter| {
        match f {
        Filter::Param {
            ptype: ParamType::Reference,
            modifier,
            ..
        } => *modifier != Modifier::Not,
        Filter::Param {
            ptype: ParamType::Date,
            modifier: Modifier::None,
            values,
            ..
        } => values.iter().all(|v| {
            matches!(v, SearchValue::Date { prefix: Prefix::Eq, low, high } if high - low <= MONTH)
        }),
        _ => false,
    }
    };
    q.filters
        .iter()
        .position(|f| {
            matches!(
                f,
                Filter::Param {
                    ptype: ParamType::Reference,
                    ..
                }
            ) && selective(f)
        })
        .or_else(|| q.filters.iter().position(selective))
}

/// ` FROM … r WHERE …`: the matches of a query as rows `r` with a `pk` column. Driven by the
/// index table of one filter when possible ([`driving_filter`]), otherwise by `resources`.
fn from_where(q: &SearchQuery, table: &str) -> Sql {
    let Some(n) = driving_filter(q) else {
        let mut s = Sql::new();
        s.push(&format!(" FROM {table} r WHERE "))
            .append(where_clause(q));
        return s;
    };
    let mut s = Sql::new();
    let mut b = Builder {
        n: 0,
        compartment: q.compartment.clone(),
    };
    if let Filter::Param {
        param,
        ptype,
        modifier,
        values,
    } = &q.filters[n]
    {
        let t = table_of(*ptype).unwrap_or("search_token");
        s.push(&format!(
            " FROM (SELECT DISTINCT x.resource_pk AS pk FROM {t} x WHERE x.res_type = "
        ))
        .text(q.ty.clone())
        .push(" AND x.param = ")
        .text(param.clone())
        .push(" AND (");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                s.push(" OR ");
            }
            Builder::value_cond(&mut s, "x", modifier, v);
        }
        s.push(")) r WHERE 1 = 1");
    }
    for (i, f) in q.filters.iter().enumerate() {
        if i != n {
            s.push(" AND ");
            b.filter(&mut s, f, &q.ty, "r");
        }
    }
    if let Some(p) = &q.compartment {
        s.push(" AND ");
        b.compartment(&mut s, &q.ty, "r", p);
    }
    s
}

/// A decoded page token: direction (true = after) and the boundary row's keys then pk.
fn decode_page(token: &str, keys: &[SortKey]) -> ApiResult<(bool, Vec<Value>)> {
    let bad = || {
        ApiError::invalid_at(
            format!("_page '{token}' is not a page token from a link of this server"),
            "_page",
        )
    };
    let (dir, rest) = token.split_at(token.len().min(1));
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

fn bind_json(q: &mut Sql, kind: KeyKind, v: &Value) {
    match kind {
        KeyKind::Int => q.int(v.as_i64().unwrap_or_default()),
        KeyKind::Float => q.float(v.as_f64().unwrap_or_default()),
        KeyKind::Text => q.text(v.as_str().unwrap_or_default()),
    };
}

/// Keyset condition: rows strictly after (`forward`) the boundary in the sort order.
fn keyset(q: &mut Sql, keys: &[SortKey], vals: &[Value], forward: bool) {
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

fn encode_page(after: bool, row: &Row, keys: &[SortKey]) -> String {
    let mut v: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| row.key(n, key_kind(k)))
        .collect();
    v.push(json!(row.pk));
    format!("{}{}", if after { "a" } else { "b" }, Value::Array(v))
}

/// The table a type's resources are searched in.
fn table(ty: &str) -> &'static str {
    if ty == audit::TYPE {
        audit::TABLE
    } else {
        "resources"
    }
}

/// AuditEvents (store::audit) carry no search-index rows: no chain, `_has` or include reaches
/// into or out of them. Refused rather than answered with nothing.
fn check_supported(q: &SearchQuery) -> ApiResult<()> {
    fn touches_audit(f: &Filter, ty: &str) -> bool {
        match f {
            Filter::Chain { targets, .. } => {
                ty == audit::TYPE
                    || targets
                        .iter()
                        .any(|(t, inner)| t == audit::TYPE || touches_audit(inner, t))
            }
            Filter::Has {
                source_type, inner, ..
            } => {
                ty == audit::TYPE || source_type == audit::TYPE || touches_audit(inner, source_type)
            }
            _ => false,
        }
    }
    let includes = q.includes.iter().chain(&q.revincludes).any(|i| {
        q.ty == audit::TYPE
            || i.source_type == audit::TYPE
            || i.target_type.as_deref() == Some(audit::TYPE)
    });
    if includes || q.filters.iter().any(|f| touches_audit(f, &q.ty)) {
        return Err(ApiError::BadRequest {
            code: crate::fhir::outcome::IssueType::NotSupported,
            msg: "chains, _has, _include and _revinclude do not reach AuditEvents (the audit \
                  trail is searched by its own parameters only)"
                .into(),
            expression: None,
        });
    }
    Ok(())
}

/// Count the matches of a query.
pub fn count(conn: &mut DbConn, q: &SearchQuery) -> ApiResult<i64> {
    check_supported(q)?;
    let mut s = Sql::new();
    s.push("SELECT COUNT(*) AS n")
        .append(from_where(q, table(&q.ty)));
    let rows: Vec<CountRow> = load(conn, &s).map_err(db_error)?;
    Ok(rows.first().map_or(0, |r| r.n))
}

/// One page of a search (`count` rows at most) with its included resources.
pub fn search(conn: &mut DbConn, q: &SearchQuery, count_limit: i64) -> ApiResult<SearchPage> {
    check_supported(q)?;
    let table = table(&q.ty);
    let keys = &q.sort;
    let page = match &q.page {
        Some(t) => Some(decode_page(t, keys)?),
        None => None,
    };
    let forward = page.as_ref().is_none_or(|(after, _)| *after);
    let mut s = Sql::new();
    // Two stages: find the page's pks and sort keys from the indexes alone (index-only scans,
    // no resource bodies read for non-page matches), then join the page's rows.
    let order = |alias: &str| {
        let mut o = String::from(" ORDER BY ");
        for (n, k) in keys.iter().enumerate() {
            let suffix = match key_kind(k) {
                KeyKind::Int => "i",
                KeyKind::Text => "t",
                KeyKind::Float => "f",
            };
            let desc = k.descending == forward;
            o.push_str(&format!(
                "{alias}.k{}_{suffix}{}, ",
                n + 1,
                if desc { " DESC" } else { "" }
            ));
        }
        o.push_str(&format!("{alias}.pk{}", if forward { "" } else { " DESC" }));
        o
    };
    s.push(
        "SELECT r.pk, r.res_type, r.res_id, r.version_id, r.last_updated, r.content, \
         p.k1_i, p.k1_t, p.k1_f, p.k2_i, p.k2_t, p.k2_f, p.k3_i, p.k3_t, p.k3_f \
         FROM (SELECT q.* FROM (SELECT r.pk",
    );
    for n in 0..3 {
        let k = keys.get(n);
        for (suffix, kind, cast) in [
            ("i", KeyKind::Int, "BIGINT"),
            ("t", KeyKind::Text, "TEXT"),
            ("f", KeyKind::Float, "DOUBLE PRECISION"),
        ] {
            s.push(", ");
            match k {
                Some(k) if key_kind(k) == kind => key_expr(&mut s, &q.ty, k),
                _ => {
                    s.push(&format!("CAST(NULL AS {cast})"));
                }
            }
            s.push(&format!(" AS k{}_{suffix}", n + 1));
        }
    }
    s.append(from_where(q, table));
    s.push(") q");
    if let Some((_, vals)) = &page {
        s.push(" WHERE ");
        keyset(&mut s, keys, vals, forward);
    }
    s.push(&order("q"));
    s.push(" LIMIT ").int(count_limit + 1);
    s.push(&format!(") p JOIN {table} r ON r.pk = p.pk"));
    s.push(&order("p"));
    log::debug!("search SQL: {} -- binds: {:?}", s.text, s.binds);
    let mut rows: Vec<Row> = if count_limit == 0 {
        vec![]
    } else {
        load(conn, &s).map_err(db_error)?
    };
    let more = rows.len() as i64 > count_limit;
    rows.truncate(count_limit.max(0) as usize);
    if !forward {
        rows.reverse();
    }
    let (has_next, has_prev) = match &page {
        None => (more, false),
        Some((true, _)) => (more, true),
        Some((false, _)) => (true, more),
    };
    let next = if has_next {
        rows.last().map(|r| encode_page(true, r, keys))
    } else {
        None
    };
    let previous = if has_prev {
        rows.first().map(|r| encode_page(false, r, keys))
    } else {
        None
    };
    let matches: Vec<Found> = rows.into_iter().map(Row::found).collect();
    let included = includes(conn, q, &matches)?;
    Ok(SearchPage {
        matches,
        included,
        total: None,
        next,
        previous,
    })
}

const FOUND_COLS: &str = "t.pk, t.res_type, t.res_id, t.version_id, t.last_updated, t.content, \
    CAST(NULL AS BIGINT) AS k1_i, CAST(NULL AS TEXT) AS k1_t, CAST(NULL AS DOUBLE PRECISION) AS k1_f, \
    CAST(NULL AS BIGINT) AS k2_i, CAST(NULL AS TEXT) AS k2_t, CAST(NULL AS DOUBLE PRECISION) AS k2_f, \
    CAST(NULL AS BIGINT) AS k3_i, CAST(NULL AS TEXT) AS k3_t, CAST(NULL AS DOUBLE PRECISION) AS k3_f";

/// Resources that `_include` (`reverse` false) or `_revinclude` reach from `from`.
fn include_step(
    conn: &mut DbConn,
    inc: &Include,
    from: &[&Found],
    reverse: bool,
) -> ApiResult<Vec<Found>> {
    let mut s = Sql::new();
    if reverse {
        // Resources of inc.source_type whose param points at one of `from`.
        let mut by_type: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for f in from {
            if inc.target_type.as_deref().is_none_or(|t| t == f.res_type) {
                by_type
                    .entry(&f.res_type)
                    .or_default()
                    .push(f.res_id.clone());
            }
        }
        if by_type.is_empty() {
            return Ok(vec![]);
        }
        s.push(&format!(
            "SELECT DISTINCT {FOUND_COLS} FROM search_reference i JOIN resources t ON t.pk = i.resource_pk WHERE i.res_type = "
        ))
        .text(inc.source_type.clone());
        if let Some(p) = &inc.param {
            s.push(" AND i.param = ").text(p.clone());
        } else {
            reference_params(&mut s, &inc.source_type);
        }
        s.push(" AND NOT t.deleted AND (");
        for (n, (t, ids)) in by_type.iter().enumerate() {
            if n > 0 {
                s.push(" OR ");
            }
            s.push("(i.target_type = ")
                .text(*t)
                .push(" AND i.target_id IN ")
                .text_list(ids)
                .push(")");
        }
        s.push(")");
    } else {
        let pks: Vec<i64> = from
            .iter()
            .filter(|f| f.res_type == inc.source_type)
            .map(|f| f.pk)
            .collect();
        if pks.is_empty() {
            return Ok(vec![]);
        }
        s.push(&format!(
            "SELECT DISTINCT {FOUND_COLS} FROM search_reference i JOIN resources t ON t.res_type = i.target_type AND t.res_id = i.target_id WHERE i.res_type = "
        ))
        .text(inc.source_type.clone())
        .push(" AND i.resource_pk IN (");
        for (n, pk) in pks.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.int(*pk);
        }
        s.push(")");
        if let Some(p) = &inc.param {
            s.push(" AND i.param = ").text(p.clone());
        } else {
            reference_params(&mut s, &inc.source_type);
        }
        if let Some(t) = &inc.target_type {
            s.push(" AND i.target_type = ").text(t.clone());
        }
        s.push(" AND NOT t.deleted");
    }
    s.push(" ORDER BY t.pk LIMIT ").int(MAX_INCLUDES);
    let rows: Vec<Row> = load(conn, &s).map_err(db_error)?;
    Ok(rows.into_iter().map(Row::found).collect())
}

/// `AND i.param IN (every reference parameter of ty)` for `*` includes.
fn reference_params(s: &mut Sql, ty: &str) {
    let names: Vec<String> = SearchParams::get()
        .for_type(ty)
        .map(|m| {
            m.values()
                .filter(|d| d.ptype == ParamType::Reference)
                .map(|d| d.code.clone())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        s.push(" AND 1 = 0");
    } else {
        s.push(" AND i.param IN ").text_list(&names);
    }
}

/// Keep only resources in the query's compartment (when it has one).
fn in_compartment(conn: &mut DbConn, q: &SearchQuery, found: Vec<Found>) -> ApiResult<Vec<Found>> {
    let Some(patients) = &q.compartment else {
        return Ok(found);
    };
    let mut by_type: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for f in &found {
        by_type.entry(f.res_type.clone()).or_default().push(f.pk);
    }
    let mut keep = std::collections::HashSet::new();
    for (ty, pks) in by_type {
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
            compartment: None,
        }
        .compartment(&mut s, &ty, "r", patients);
        let rows: Vec<PkRow> = load(conn, &s).map_err(db_error)?;
        keep.extend(rows.into_iter().map(|r| r.pk));
    }
    Ok(found.into_iter().filter(|f| keep.contains(&f.pk)).collect())
}

fn includes(conn: &mut DbConn, q: &SearchQuery, matches: &[Found]) -> ApiResult<Vec<Found>> {
    if (q.includes.is_empty() && q.revincludes.is_empty()) || matches.is_empty() {
        return Ok(vec![]);
    }
    let mut seen: std::collections::HashSet<i64> = matches.iter().map(|f| f.pk).collect();
    let mut out: Vec<Found> = Vec::new();
    let mut frontier: Vec<Found> = matches.to_vec();
    for round in 0..=MAX_ITERATE {
        let mut added = Vec::new();
        let from: Vec<&Found> = frontier.iter().collect();
        for (list, reverse) in [(&q.includes, false), (&q.revincludes, true)] {
            for inc in list.iter().filter(|i| round == 0 || i.iterate) {
                for f in include_step(conn, inc, &from, reverse)? {
                    if seen.insert(f.pk) {
                        added.push(f);
                    }
                }
            }
        }
        let added = in_compartment(conn, q, added)?;
        if added.is_empty() {
            break;
        }
        out.extend(added.iter().cloned());
        frontier = added;
        if out.len() as i64 >= MAX_INCLUDES {
            break;
        }
    }
    Ok(out)
}

/// Ids of every current, non-deleted resource of `ty` matching `query_string`
/// (used by conditional create/update/delete and conditional references).
pub fn find_ids(conn: &mut DbConn, ty: &str, query_string: &str) -> ApiResult<Vec<String>> {
    let q = SearchQuery::parse(ty, query_string)?;
    if !q.issues.is_empty() {
        return Err(ApiError::invalid_at(
            format!("search criteria not understood: {}", q.issues.join("; ")),
            ty,
        ));
    }
    #[derive(QueryableByName)]
    struct IdRow {
        #[diesel(sql_type = Text)]
        res_id: String,
    }
    check_supported(&q)?;
    let mut s2 = Sql::new();
    s2.push(&format!("SELECT r.res_id FROM {} r WHERE ", table(&q.ty)))
        .append(where_clause(&q))
        .push(" ORDER BY r.pk");
    let rows: Vec<IdRow> = load(conn, &s2).map_err(db_error)?;
    Ok(rows.into_iter().map(|r| r.res_id).collect())
}

/// Current resources (type, id) that reference `target_type/target_id` through any parameter.
pub fn referrers(
    conn: &mut DbConn,
    target_type: &str,
    target_id: &str,
) -> ApiResult<Vec<(String, String)>> {
    #[derive(QueryableByName)]
    struct RefRow {
        #[diesel(sql_type = Text)]
        res_type: String,
        #[diesel(sql_type = Text)]
        res_id: String,
    }
    let mut s = Sql::new();
    s.push("SELECT DISTINCT r.res_type, r.res_id FROM search_reference i JOIN resources r ON r.pk = i.resource_pk \
            WHERE i.target_id = ")
        .text(target_id)
        .push(" AND i.target_type = ")
        .text(target_type)
        .push(" AND NOT r.deleted ORDER BY r.res_type, r.res_id");
    let rows: Vec<RefRow> = load(conn, &s).map_err(db_error)?;
    Ok(rows.into_iter().map(|r| (r.res_type, r.res_id)).collect())
}
