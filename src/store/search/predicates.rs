//! Filter predicates: each parameter of a `SearchQuery` becomes SQL over the search_* index
//! tables (or the audit_log columns), chains and `_has` as nested selects.
use crate::fhir::datetime::now_micros;
use crate::fhir::search::extract::identifier_param;
use crate::fhir::search::fulltext::{Term, TextQuery};
use crate::fhir::search::params::ParamType;
use crate::fhir::search::query::{part_params, Filter, Modifier, Prefix, SearchValue};
use crate::fhir::search::values::fold;
use crate::store::audit;
use crate::store::sql::Sql;
use crate::store::visibility::Visibility;

use super::TOP;

pub(super) fn table_of(p: ParamType) -> Option<&'static str> {
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
pub(super) struct Builder<'v> {
    pub(super) n: u32,
    /// The caller's access: rows reached through a chain or `_has` must be visible too, so a
    /// chain cannot probe other patients' data.
    pub(super) vis: &'v dyn Visibility,
    /// PostgreSQL (else SQLite): the full-text SQL differs.
    pub(super) pg: bool,
}

impl Builder<'_> {
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
    pub(super) fn value_cond(q: &mut Sql, i: &str, modifier: &Modifier, v: &SearchValue) {
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
            SearchValue::Codes {
                systems,
                implicit_system,
            } => {
                q.push("(");
                let mut any = false;
                for (system, codes) in systems.iter().filter(|(_, c)| !c.is_empty()) {
                    if any {
                        q.push(" OR ");
                    }
                    any = true;
                    q.push("((")
                        .push(&c("system"))
                        .push(" = ")
                        .text(system.clone());
                    if *implicit_system {
                        q.push(" OR ").push(&c("system")).push(" IS NULL");
                    }
                    q.push(") AND ")
                        .push(&c("code"))
                        .push(" IN ")
                        .text_list(codes);
                    q.push(")");
                }
                if !any {
                    q.push("1 = 0");
                }
                q.push(")");
            }
            // Parts of a group are matched by `grouped`, each on its own row.
            SearchValue::Composite(_) => {
                q.push("1 = 0");
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
    pub(super) fn filter(&mut self, q: &mut Sql, f: &Filter, ty: &str, a: &str) {
        if audit::is_audit_log(ty) && matches!(f, Filter::Param { .. } | Filter::Missing { .. }) {
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
                if let Some(SearchValue::Composite(parts)) = values.first() {
                    let kinds: Vec<ParamType> = parts.iter().map(|(t, _)| *t).collect();
                    return self.grouped(q, a, ty, param, modifier, &kinds, values);
                }
                // `:identifier` searches the identifiers of references, kept as token rows.
                let (table, param) = match modifier {
                    Modifier::Identifier => ("search_token", identifier_param(param)),
                    _ => match table_of(*ptype) {
                        Some(t) => (t, param.clone()),
                        None => {
                            q.push("1 = 0");
                            return;
                        }
                    },
                };
                let i = self.alias("i");
                q.push(a).push(".pk ");
                if matches!(modifier, Modifier::Not | Modifier::NotIn) {
                    q.push("NOT ");
                }
                q.push(&format!(
                    "IN (SELECT {i}.resource_pk FROM {table} {i} WHERE {i}.res_type = "
                ))
                .text(ty)
                .push(&format!(" AND {i}.param = "))
                .text(param)
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
                    self.and_visible(q, tt, &t);
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
                self.and_visible(q, source_type, &t);
                q.push(")");
            }
            Filter::FullText { narrative, query } => {
                Self::fulltext(q, self.pg, a, *narrative, query)
            }
        }
    }

    /// A grouped parameter on the resource row `a`: a composite parameter or `:of-type`. Each
    /// part is a row of its own index table; the parts of one value must come from the same
    /// repetition (the same non-zero `grp` of the same resource).
    #[allow(clippy::too_many_arguments)]
    fn grouped(
        &mut self,
        q: &mut Sql,
        a: &str,
        ty: &str,
        param: &str,
        modifier: &Modifier,
        kinds: &[ParamType],
        values: &[SearchValue],
    ) {
        let names = part_params(param, modifier, kinds.len());
        let aliases: Vec<String> = kinds.iter().map(|_| self.alias("g")).collect();
        let mut tables = Vec::new();
        for k in kinds {
            match table_of(*k) {
                Some(t) => tables.push(t),
                None => {
                    q.push("1 = 0");
                    return;
                }
            }
        }
        let g0 = &aliases[0];
        q.push(&format!(
            "{a}.pk IN (SELECT {g0}.resource_pk FROM {} {g0}",
            tables[0]
        ));
        for n in 1..kinds.len() {
            let g = &aliases[n];
            q.push(&format!(
                " JOIN {} {g} ON {g}.resource_pk = {g0}.resource_pk AND {g}.grp = {g0}.grp AND {g}.param = ",
                tables[n]
            ))
            .text(names[n].clone());
        }
        q.push(&format!(" WHERE {g0}.res_type = "))
            .text(ty)
            .push(&format!(" AND {g0}.param = "))
            .text(names[0].clone())
            .push(&format!(" AND {g0}.grp <> 0 AND ("));
        for (n, v) in values.iter().enumerate() {
            if n > 0 {
                q.push(" OR ");
            }
            let SearchValue::Composite(parts) = v else {
                q.push("1 = 0");
                continue;
            };
            q.push("(");
            for (i, (_, pv)) in parts.iter().enumerate() {
                if i > 0 {
                    q.push(" AND ");
                }
                match aliases.get(i) {
                    Some(g) => Self::value_cond(q, g, &Modifier::None, pv),
                    None => {
                        q.push("1 = 0");
                    }
                }
            }
            q.push(")");
        }
        q.push("))");
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

    /// `_text`/`_content` (store::fulltext): row `a` (with a `pk`) matches a full-text query, on
    /// the narrative or on the whole resource. Every term reaches the database as a bound value: PostgreSQL builds the
    /// `tsquery` from `plainto_tsquery`/`phraseto_tsquery` of each term (AND `&&`, OR `||`); SQLite
    /// gets an FTS5 expression in which every term is a double-quoted string (quotes doubled), so
    /// no FTS5 operator or column name in user input is ever interpreted.
    fn fulltext(q: &mut Sql, pg: bool, a: &str, narrative: bool, query: &TextQuery) {
        let col = if narrative {
            "narrative"
        } else {
            "content_text"
        };
        if query.any.is_empty() {
            q.push("1 = 0");
            return;
        }
        if pg {
            q.push(&format!(
                "{a}.pk IN (SELECT ft.resource_pk FROM search_fulltext ft WHERE ft.{col} @@ ("
            ));
            for (n, group) in query.any.iter().enumerate() {
                if n > 0 {
                    q.push(" || ");
                }
                q.push("(");
                for (m, term) in group.iter().enumerate() {
                    if m > 0 {
                        q.push(" && ");
                    }
                    let f = match term {
                        Term::Word(_) => "plainto_tsquery",
                        Term::Phrase(_) => "phraseto_tsquery",
                    };
                    q.push(f).push("('english', ").text(term.text()).push(")");
                }
                q.push(")");
            }
            q.push("))");
        } else {
            q.push(&format!(
                "{a}.pk IN (SELECT rowid FROM search_fulltext WHERE search_fulltext MATCH "
            ))
            .text(fts5_expression(col, query))
            .push(")");
        }
    }
}

/// `col : (("a" AND "b c") OR ("d"))`: an FTS5 query limited to one column.
fn fts5_expression(col: &str, query: &TextQuery) -> String {
    let groups: Vec<String> = query
        .any
        .iter()
        .map(|g| {
            let terms: Vec<String> = g
                .iter()
                .map(|t| format!("\"{}\"", t.text().replace('"', "\"\"")))
                .collect();
            format!("({})", terms.join(" AND "))
        })
        .collect();
    format!("{col} : ({})", groups.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::fulltext::{parse, Term};
    use crate::store::sql::Bind;

    #[test]
    fn fts5_terms_are_quoted() {
        let q = parse("walk \"say \"\"hi\" OR NEAR(a) col:x").unwrap();
        assert_eq!(
            fts5_expression("narrative", &q),
            "narrative : ((\"walk\" AND \"say\" AND \"hi\") OR (\"near(a)\" AND \"col:x\"))"
        );
        let q = TextQuery {
            any: vec![vec![Term::Word("a\"b".into())]],
        };
        assert_eq!(fts5_expression("x", &q), "x : ((\"a\"\"b\"))");
    }

    #[test]
    fn pg_terms_are_bound() {
        let q = parse("walk \"heart failure\" OR copd").unwrap();
        let mut s = Sql::new();
        Builder::fulltext(&mut s, true, "r", false, &q);
        assert_eq!(
            s.text,
            "r.pk IN (SELECT ft.resource_pk FROM search_fulltext ft WHERE ft.content_text @@ \
             ((plainto_tsquery('english', ?) && phraseto_tsquery('english', ?)) || \
             (plainto_tsquery('english', ?))))"
        );
        assert_eq!(
            s.binds,
            vec![
                Bind::Text("walk".into()),
                Bind::Text("heart failure".into()),
                Bind::Text("copd".into())
            ]
        );
    }
}
