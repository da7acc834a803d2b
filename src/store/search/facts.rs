//! Facts for aggregate reports (`$icm-metrics`): compact rows of search-index values — the
//! resource id, its patient, dates, codes, references, a quantity — of the current resources
//! of one type that match conditions on the index tables. No resource content is read or
//! parsed: an aggregate over 100,000 patients reads index rows only.
//!
//! Like every read of the store, a fact query carries the caller's [`Visibility`] in its SQL
//! (restrict.rs): on the resources it returns and on the resources it reaches through a
//! reference (`Linked`), so a fact the caller may not see is never counted.
use diesel::sql_types::{BigInt, Double, Nullable, Text};

use std::sync::OnceLock;

use super::predicates::Builder;
use super::TOP;
use crate::error::ApiResult;
use crate::fhir::search::extract::{IndexRows, TokenRow};
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{bulk_insert, execute, is_pg, load_typed_map, Column, Sql};
use crate::store::visibility::{Rows, Visibility};

/// Which token systems match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    Any,
    Is(String),
    /// This system, or a token without a system.
    IsOrAbsent(String),
}

/// Which token codes match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeMatch {
    Any,
    Is(String),
    /// Codes starting with this text (case as written).
    Prefix(String),
}

/// One accepted (system, code) of a token condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    pub system: SystemMatch,
    pub code: CodeMatch,
}

impl TokenMatch {
    /// `system|code`.
    pub fn exact(system: &str, code: &str) -> TokenMatch {
        TokenMatch {
            system: SystemMatch::Is(system.into()),
            code: CodeMatch::Is(code.into()),
        }
    }
    /// A code in any system.
    pub fn code(code: &str) -> TokenMatch {
        TokenMatch {
            system: SystemMatch::Any,
            code: CodeMatch::Is(code.into()),
        }
    }
}

/// A condition on the resource's index rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Some row of token parameter `param` matches one of `any`.
    Token {
        param: String,
        any: Vec<TokenMatch>,
    },
    /// Some row of reference parameter `param` points at `target_type` with one of `ids`.
    Ref {
        param: String,
        target_type: String,
        ids: Vec<String>,
    },
    /// Some row of date parameter `param` overlaps `[low, high)` (microseconds).
    Overlaps {
        param: String,
        low: i64,
        high: i64,
    },
    Not(Box<Cond>),
    Any(Vec<Cond>),
}

/// The date of a resource a reference parameter points at (e.g. the focus Encounter's period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub ref_param: String,
    pub target_type: String,
    pub date_param: String,
    /// An installed fact kind of `target_type` whose first date is `date_param`: stored facts
    /// read the date from it (no `resources` row of the target is read).
    pub kind: Option<&'static str>,
}

/// A fact query over the current resources of `ty`.
///
/// With a `kind` that is installed ([`install`]), the query is a *fact kind*: its facts are
/// derived from each resource's index rows when the resource is written (the same unit of work
/// as its search index rows, [`derive`]) and kept in `measure_facts`, so a report reads them with
/// one scan of that table; `filters` and `patients` are then applied to the stored facts. Without
/// one (or before it is installed) the facts are computed from the index tables at read time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactQuery {
    /// The name of the fact kind (see above).
    pub kind: Option<&'static str>,
    pub ty: String,
    /// The reference parameter naming the resource's patient (ignored for Patient itself;
    /// empty: facts whatever the patient, with an empty `patient`).
    pub patient_param: String,
    /// Only these patients (None: every patient the caller may see).
    pub patients: Option<Vec<String>>,
    /// All must hold. A leading Token, Ref or Overlaps condition drives the query from its
    /// index table, so put the most selective first.
    pub conds: Vec<Cond>,
    /// Date parameters returned as (lowest low, highest high); at most 3.
    pub dates: Vec<String>,
    /// Token parameters returned as their (lowest) code; at most 3.
    pub tokens: Vec<String>,
    /// A reference parameter returned as `Type/id` (the lowest).
    pub reference: Option<String>,
    /// A quantity parameter returned as its (lowest) value.
    pub quantity: Option<String>,
    /// The date of a referenced resource, returned as (lowest low, highest high).
    pub linked: Option<Linked>,
    /// A composite parameter of a token and a quantity part (`combo-code-value-quantity`):
    /// one row per group whose token matches, with its code and value.
    pub pairs: Option<(String, Vec<TokenMatch>)>,
    /// Conditions returned as whether they hold; at most 2.
    pub flags: Vec<Cond>,
    /// The reader does not need the resources' ids (stored facts then send '' instead).
    pub without_id: bool,
    /// Conditions of this request (not of the kind): e.g. the report's period as an `Overlaps`
    /// of one of `dates` (on stored facts: of its (lowest low, highest high) envelope), or a
    /// care manager's reference.
    pub filters: Vec<Cond>,
    /// How this request narrows a stored kind to the facts its reader uses (see [`Narrow`]).
    pub narrow: Narrow,
}

/// Ways a reader narrows the stored facts of a kind to those it can use, so that a population
/// report does not send and decode facts it would drop. Each one only removes facts the reader
/// ignores anyway: facts computed from the index tables (a kind that is not installed) and a
/// narrowing that names a kind that is not installed skip it, and the reader, which keeps its
/// own checks, computes the same measures from the superset. What backs this: the hand-built
/// worlds of `tests/measures.rs` (with cases each narrowing must keep, e.g. a patient whose
/// latest risk tier is low after a high one) and the independent Python recomputation of
/// `tests/measures_check.rs`, both reading narrowed stored facts on both backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrow {
    /// Only facts whose first date begins in `[low, high)` (microseconds): for a reader that
    /// counts a fact on the day its first date begins. Unlike an `Overlaps` filter it is one
    /// range of the `(kind, d1l)` index.
    pub begins: Option<(i64, i64)>,
    /// Only facts of patients who have a fact of this kind that the caller may see (e.g. blood
    /// pressure readings of patients with a hypertension fact).
    pub patient_has: Option<&'static str>,
    /// Per patient, only the facts whose first date begins latest (all of them on a tie).
    pub latest: bool,
    /// Only facts whose first flag holds (after `latest`: the patients whose latest fact is
    /// flagged, e.g. whose current risk tier is high).
    pub flagged: bool,
    /// With stored `linked` facts, only facts whose linked resource's date ends (its highest
    /// high) in `(low, high]` (microseconds): for a reader that counts a fact on the day the
    /// resource it points at ended (a follow-up Task on its Encounter's discharge day). The
    /// linked rows are filtered before `MIN`/`MAX`, which is the same as filtering the result
    /// when a fact points at one resource (`Task.focus` is 0..1).
    pub linked_ends: Option<(i64, i64)>,
}

/// One row of a fact query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fact {
    pub id: String,
    pub patient: String,
    pub dates: [Option<(i64, i64)>; 3],
    pub tokens: [Option<String>; 3],
    pub reference: Option<String>,
    pub quantity: Option<f64>,
    pub linked: Option<(i64, i64)>,
    pub pair: Option<(String, f64)>,
    pub flags: [bool; 2],
}

/// Patients per statement (lists are bound values; SQLite allows 32,766 per statement).
const CHUNK: usize = 1000;

/// The facts of `q` that `vis` may see.
pub fn facts(conn: &mut DbConn, vis: &dyn Visibility, q: &FactQuery) -> ApiResult<Vec<Fact>> {
    if vis.rows(&q.ty) == Rows::Hidden {
        return Ok(vec![]);
    }
    let stored = q.kind.is_some_and(is_installed);
    let computed;
    let q = if stored {
        q
    } else {
        // From the index tables: the request's conditions first (a period or a reference
        // usually selects fewer rows than the kind's codes).
        let mut c = q.clone();
        c.conds = q.filters.iter().chain(&q.conds).cloned().collect();
        c.filters.clear();
        computed = c;
        &computed
    };
    let read = |conn: &mut DbConn, chunk: Option<&[String]>| {
        if stored {
            run_stored(conn, vis, q, chunk)
        } else {
            run(conn, vis, q, chunk)
        }
    };
    let Some(patients) = &q.patients else {
        return read(conn, None);
    };
    let mut out = Vec::new();
    for chunk in patients.chunks(CHUNK) {
        out.extend(read(conn, Some(chunk))?);
    }
    Ok(out)
}

fn run(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    q: &FactQuery,
    patients: Option<&[String]>,
) -> ApiResult<Vec<Fact>> {
    let pg = is_pg(conn);
    let mut b = Builder { n: 0, vis, pg };
    let mut conds: Vec<Cond> = q.conds.clone();
    if let Some(p) = patients {
        if q.ty == "Patient" {
            conds.push(Cond::Ref {
                param: String::new(),
                target_type: "Patient".into(),
                ids: p.to_vec(),
            });
        } else {
            conds.insert(
                0,
                Cond::Ref {
                    param: q.patient_param.clone(),
                    target_type: "Patient".into(),
                    ids: p.to_vec(),
                },
            );
        }
    }
    let mut s = Sql::new();
    s.push(if q.without_id {
        "SELECT '' AS id, "
    } else {
        "SELECT r.res_id AS id, "
    });
    let by_patient = q.ty != "Patient" && !q.patient_param.is_empty();
    if q.ty == "Patient" {
        s.push("r.res_id AS patient");
    } else if by_patient {
        s.push("p.target_id AS patient");
    } else {
        s.push("'' AS patient");
    }
    for i in 0..3 {
        match q.dates.get(i) {
            Some(param) => {
                for (agg, col, name) in [("MIN", "low", "l"), ("MAX", "high", "h")] {
                    s.push(&format!(
                        ", (SELECT {agg}(d.{col}) FROM search_date d WHERE d.resource_pk = r.pk AND d.param = "
                    ))
                    .text(param.clone())
                    .push(&format!(") AS d{}{name}", i + 1));
                }
            }
            None => {
                s.push(&format!(
                    ", CAST(NULL AS BIGINT) AS d{n}l, CAST(NULL AS BIGINT) AS d{n}h",
                    n = i + 1
                ));
            }
        }
    }
    for i in 0..3 {
        match q.tokens.get(i) {
            Some(param) => {
                s.push(", (SELECT MIN(t.code) FROM search_token t WHERE t.resource_pk = r.pk AND t.param = ")
                    .text(param.clone())
                    .push(&format!(") AS t{}", i + 1));
            }
            None => {
                s.push(&format!(", CAST(NULL AS TEXT) AS t{}", i + 1));
            }
        }
    }
    match &q.reference {
        Some(param) => {
            s.push(", (SELECT MIN(x.target_type || '/' || x.target_id) FROM search_reference x WHERE x.resource_pk = r.pk AND x.param = ")
                .text(param.clone())
                .push(") AS rf");
        }
        None => {
            s.push(", CAST(NULL AS TEXT) AS rf");
        }
    }
    match &q.quantity {
        Some(param) => {
            s.push(", (SELECT MIN(v.value) FROM search_quantity v WHERE v.resource_pk = r.pk AND v.param = ")
                .text(param.clone())
                .push(") AS qv");
        }
        None => {
            s.push(", CAST(NULL AS DOUBLE PRECISION) AS qv");
        }
    }
    linked_columns(&mut s, &mut b, q);
    if q.pairs.is_some() {
        s.push(", pc.code AS pc, pv.value AS pv");
    } else {
        s.push(", CAST(NULL AS TEXT) AS pc, CAST(NULL AS DOUBLE PRECISION) AS pv");
    }
    for i in 0..2 {
        match q.flags.get(i) {
            Some(c) => {
                s.push(", CAST(CASE WHEN ");
                cond(&mut s, c, &q.ty);
                s.push(&format!(" THEN 1 ELSE 0 END AS BIGINT) AS f{}", i + 1));
            }
            None => {
                s.push(&format!(", CAST(0 AS BIGINT) AS f{}", i + 1));
            }
        }
    }
    // FROM: driven by the first condition's index rows when it can be.
    let drive = conds.first().and_then(|c| driving(c, &q.ty));
    match &drive {
        Some(sub) => {
            s.push(" FROM (")
                .append(sub.clone())
                .push(") k JOIN resources r ON r.pk = k.pk");
        }
        None => {
            s.push(" FROM resources r");
        }
    }
    if by_patient {
        s.push(" JOIN search_reference p ON p.resource_pk = r.pk AND p.param = ")
            .text(q.patient_param.clone())
            .push(" AND p.target_type = 'Patient'");
    }
    if let Some((param, codes)) = &q.pairs {
        s.push(" JOIN search_token pc ON pc.resource_pk = r.pk AND pc.param = ")
            .text(format!("{param}$0"))
            .push(" AND pc.grp <> 0 AND ");
        token_matches(&mut s, "pc", codes);
        s.push(" JOIN search_quantity pv ON pv.resource_pk = r.pk AND pv.param = ")
            .text(format!("{param}$1"))
            .push(" AND pv.grp = pc.grp");
    }
    s.push(" WHERE r.res_type = ")
        .text(q.ty.clone())
        .push(" AND NOT r.deleted");
    let skip = usize::from(drive.is_some());
    for c in conds.iter().skip(skip) {
        s.push(" AND ");
        cond(&mut s, c, &q.ty);
    }
    b.and_visible(&mut s, &q.ty, "r");
    read_rows(conn, &s)
}

type NT = Nullable<Text>;
type NB = Nullable<BigInt>;
type ND = Nullable<Double>;
/// The SQL types of a fact query's columns, in order (two tuples: diesel reads up to 16).
type RowTypes = (
    (Text, NT, NB, NB, NB, NB, NB, NB),
    (NT, NT, NT, NT, ND, NB, NB, NT, ND, BigInt, BigInt),
);
type RowValues = (
    (
        String,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ),
    (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<f64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<f64>,
        i64,
        i64,
    ),
);

/// Run a fact query (its columns in the order of [`RowTypes`]: id, patient, three date ranges,
/// three codes, reference, quantity, linked range, pair code and value, two flags) and read its
/// rows by position.
fn read_rows(conn: &mut DbConn, s: &Sql) -> ApiResult<Vec<Fact>> {
    let both = |l: Option<i64>, h: Option<i64>| l.zip(h);
    load_typed_map::<RowTypes, RowValues, Fact>(conn, s, |(a, b)| {
        Some(Fact {
            id: a.0,
            patient: a.1?,
            dates: [both(a.2, a.3), both(a.4, a.5), both(a.6, a.7)],
            tokens: [b.0, b.1, b.2],
            reference: b.3,
            quantity: b.4,
            linked: both(b.5, b.6),
            pair: b.7.zip(b.8),
            flags: [b.9 != 0, b.10 != 0],
        })
    })
    .map_err(db_error)
}

/// The `ll`, `lh` columns: the date of the resource `q.linked` points at, seen through `b`'s
/// visibility (row `r` carries the fact's resource `pk`).
fn linked_columns(s: &mut Sql, b: &mut Builder, q: &FactQuery) {
    let Some(l) = &q.linked else {
        s.push(", CAST(NULL AS BIGINT) AS ll, CAST(NULL AS BIGINT) AS lh");
        return;
    };
    for (agg, col, name) in [("MIN", "low", "ll"), ("MAX", "high", "lh")] {
        s.push(&format!(
            ", (SELECT {agg}(ld.{col}) FROM search_reference lr JOIN resources lt ON lt.res_type = "
        ))
        .text(l.target_type.clone())
        .push(&format!(
            " AND lt.res_id = {} AND NOT lt.deleted JOIN search_date ld ON ld.resource_pk = lt.pk AND ld.param = ",
            crate::store::sql::as_resource_key(b.pg, "lr.target_id")
        ))
        .text(l.date_param.clone())
        .push(" WHERE lr.resource_pk = r.pk AND lr.param = ")
        .text(l.ref_param.clone())
        .push(" AND lr.target_type = ")
        .text(l.target_type.clone());
        b.and_visible(s, &l.target_type, "lt");
        s.push(&format!(") AS {name}"));
    }
}

// ---- stored facts (`measure_facts`)

/// The columns of a stored fact, after its `resource_pk` and `res_type`.
const STORED: &str =
    "res_id, kind, patient, d1l, d1h, d2l, d2h, d3l, d3h, t1, t2, t3, rf, qv, pc, pv, f1, f2";

static KINDS: OnceLock<Vec<FactQuery>> = OnceLock::new();

/// Make `kinds` (each with a `kind` name) the fact kinds this process stores and reads. The
/// first call wins; later ones return false (they must pass the same kinds).
pub fn install(kinds: Vec<FactQuery>) -> bool {
    debug_assert!(kinds
        .iter()
        .all(|k| k.kind.is_some() && k.filters.is_empty()));
    KINDS.set(kinds).is_ok()
}

/// The installed fact kinds (none before [`install`]).
pub fn kinds() -> &'static [FactQuery] {
    KINDS.get().map_or(&[], Vec::as_slice)
}

fn is_installed(kind: &str) -> bool {
    kinds().iter().any(|k| k.kind == Some(kind))
}

/// A fingerprint of the installed kinds' definitions: stored facts derived under another one
/// are rebuilt at start (store::index::ensure_current): FNV-1a (store::lookup) of their
/// definitions' debug text.
pub fn kinds_version() -> String {
    // What the stored rows depend on (not how they are read: `linked`, `without_id`).
    let text: String = kinds()
        .iter()
        .map(|k| {
            format!(
                "{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}\n",
                k.kind,
                k.ty,
                k.patient_param,
                k.conds,
                k.dates,
                k.tokens,
                k.reference,
                k.quantity,
                k.pairs,
                k.flags
            )
        })
        .collect();
    format!("{:016x}", crate::store::lookup::fnv1a(&text) as u64)
}

/// The partition of `measure_facts` that holds the facts of `kind` on PostgreSQL (migration
/// `2026-12-01-000004_measure_facts_by_kind`): `measure_facts_<kind>`, characters other than
/// ASCII letters and digits as `_`.
pub fn partition_name(kind: &str) -> String {
    let k: String = kind
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("measure_facts_{k}")
}

/// The names of the installed kinds derived from resources of type `ty`, sorted (for a
/// statement's `kind IN (…)`); None before kinds are installed. Computed once per process.
pub fn kind_names_of(ty: &str) -> Option<&'static [String]> {
    static BY_TYPE: OnceLock<std::collections::HashMap<String, Vec<String>>> = OnceLock::new();
    let all = KINDS.get()?;
    let by_type = BY_TYPE.get_or_init(|| {
        let mut m: std::collections::HashMap<String, Vec<String>> = Default::default();
        for k in all {
            m.entry(k.ty.clone())
                .or_default()
                .extend(k.kind.map(str::to_string));
        }
        for names in m.values_mut() {
            names.sort();
            names.dedup();
        }
        m
    });
    Some(by_type.get(ty).map_or(&[], Vec::as_slice))
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// On PostgreSQL, give every installed kind its own partition of `measure_facts`, moving any
/// facts of that kind out of the default partition in the same transaction. Called at start
/// under the migration lock (store::index::ensure_current). The number of partitions made.
pub fn ensure_partitions(conn: &mut DbConn) -> ApiResult<usize> {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, RunQueryDsl};
    let DbConn::Pg(c) = conn else {
        return Ok(0);
    };
    let kinds: std::collections::BTreeSet<&str> = kinds().iter().filter_map(|k| k.kind).collect();
    let names: Vec<String> = kinds.iter().map(|k| partition_name(k)).collect();
    // Those already there, in one query.
    let existing: std::collections::HashSet<String> = diesel::sql_query(
        "SELECT n AS name FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&names)
    .load::<Name>(c)
    .map_err(db_error)?
    .into_iter()
    .map(|n| n.name)
    .collect();
    let mut made = 0;
    for (kind, name) in kinds.iter().zip(&names) {
        if existing.contains(name) {
            continue;
        }
        let literal = kind.replace('\'', "''");
        c.transaction(|c| {
            c.batch_execute(&format!(
                "CREATE TABLE {name} (LIKE measure_facts INCLUDING DEFAULTS); \
                 WITH moved AS (DELETE FROM measure_facts_default WHERE kind = '{literal}' RETURNING *) \
                 INSERT INTO {name} SELECT * FROM moved; \
                 ALTER TABLE measure_facts ATTACH PARTITION {name} FOR VALUES IN ('{literal}')"
            ))
        })
        .map_err(db_error)?;
        made += 1;
    }
    Ok(made)
}

/// The facts of kind `q` that one resource (`id`, its index rows `rows`) yields: what [`run`]
/// would return for it, computed in memory (one per patient reference, and per matching group
/// of `pairs`; none when a condition fails). `linked` is not derived (it depends on another
/// resource): it is read when the facts are.
pub fn derive(q: &FactQuery, id: &str, rows: &IndexRows) -> Vec<Fact> {
    if !q.conds.iter().all(|c| holds(c, rows)) {
        return vec![];
    }
    let patients: Vec<String> = if q.ty == "Patient" {
        vec![id.to_string()]
    } else if q.patient_param.is_empty() {
        // A kind that is not about a patient (e.g. the dates other facts link to).
        vec![String::new()]
    } else {
        rows.references
            .iter()
            .filter(|r| r.param == q.patient_param && r.target_type.as_deref() == Some("Patient"))
            .filter_map(|r| r.target_id.clone())
            .collect()
    };
    if patients.is_empty() {
        return vec![];
    }
    let mut dates: [Option<(i64, i64)>; 3] = [None; 3];
    for (i, param) in q.dates.iter().take(3).enumerate() {
        let mut it = rows.dates.iter().filter(|d| d.param == *param);
        if let Some(first) = it.next() {
            dates[i] = Some(it.fold((first.low, first.high), |(l, h), d| {
                (l.min(d.low), h.max(d.high))
            }));
        }
    }
    let mut tokens: [Option<String>; 3] = Default::default();
    for (i, param) in q.tokens.iter().take(3).enumerate() {
        tokens[i] = rows
            .tokens
            .iter()
            .filter(|t| t.param == *param)
            .filter_map(|t| t.code.clone())
            .min();
    }
    let reference = q.reference.as_ref().and_then(|param| {
        rows.references
            .iter()
            .filter(|r| r.param == *param)
            .filter_map(|r| {
                Some(format!(
                    "{}/{}",
                    r.target_type.as_ref()?,
                    r.target_id.as_ref()?
                ))
            })
            .min()
    });
    let quantity = q.quantity.as_ref().and_then(|param| {
        rows.quantities
            .iter()
            .filter(|v| v.param == *param)
            .map(|v| v.value)
            .reduce(f64::min)
    });
    let pairs: Vec<Option<(String, f64)>> = match &q.pairs {
        None => vec![None],
        Some((param, codes)) => {
            let (tp, vp) = (format!("{param}$0"), format!("{param}$1"));
            let mut out = Vec::new();
            for t in rows
                .tokens
                .iter()
                .filter(|t| t.param == tp && t.grp != 0 && codes.iter().any(|m| token_is(m, t)))
            {
                for v in rows
                    .quantities
                    .iter()
                    .filter(|v| v.param == vp && v.grp == t.grp)
                {
                    out.push(t.code.clone().map(|c| (c, v.value)));
                }
            }
            out
        }
    };
    let mut flags = [false; 2];
    for (i, c) in q.flags.iter().take(2).enumerate() {
        flags[i] = holds(c, rows);
    }
    let mut out = Vec::new();
    for patient in &patients {
        for pair in &pairs {
            out.push(Fact {
                id: id.to_string(),
                patient: patient.clone(),
                dates,
                tokens: tokens.clone(),
                reference: reference.clone(),
                quantity,
                linked: None,
                pair: pair.clone(),
                flags,
            });
        }
    }
    out
}

/// Whether token row `t` is one `m` accepts (as `token_matches` in SQL).
fn token_is(m: &TokenMatch, t: &TokenRow) -> bool {
    let system = match &m.system {
        SystemMatch::Any => true,
        SystemMatch::Is(x) => t.system.as_deref() == Some(x.as_str()),
        SystemMatch::IsOrAbsent(x) => t.system.is_none() || t.system.as_deref() == Some(x.as_str()),
    };
    let code = match &m.code {
        CodeMatch::Any => true,
        CodeMatch::Is(x) => t.code.as_deref() == Some(x.as_str()),
        CodeMatch::Prefix(x) => t.code.as_deref().is_some_and(|c| c.starts_with(x.as_str())),
    };
    system && code
}

/// Whether condition `c` holds on one resource's index rows (as `cond` in SQL).
fn holds(c: &Cond, rows: &IndexRows) -> bool {
    match c {
        Cond::Token { param, any } => rows
            .tokens
            .iter()
            .any(|t| t.param == *param && any.iter().any(|m| token_is(m, t))),
        Cond::Ref {
            param,
            target_type,
            ids,
        } => rows.references.iter().any(|r| {
            r.param == *param
                && r.target_type.as_deref() == Some(target_type.as_str())
                && r.target_id.as_ref().is_some_and(|i| ids.contains(i))
        }),
        Cond::Overlaps { param, low, high } => rows
            .dates
            .iter()
            .any(|d| d.param == *param && d.low < *high && d.high > *low),
        Cond::Not(inner) => !holds(inner, rows),
        Cond::Any(list) => list.iter().any(|x| holds(x, rows)),
    }
}

/// Append the facts of every installed kind of type `ty` that one resource (`pk`, `id`, its
/// index rows) yields to `out`, as (pk, kind, fact).
pub fn derive_all(
    ty: &str,
    pk: i64,
    id: &str,
    rows: &IndexRows,
    out: &mut Vec<(i64, &'static str, Fact)>,
) {
    for k in kinds().iter().filter(|k| k.ty == ty) {
        let kind = k.kind.unwrap_or_default();
        out.extend(derive(k, id, rows).into_iter().map(|f| (pk, kind, f)));
    }
}

/// Store facts of resources of type `ty` (from [`derive_all`]), one bulk INSERT. Called by
/// store::index with the search index rows, in the same transaction.
pub fn insert_facts(
    conn: &mut DbConn,
    ty: &str,
    facts: Vec<(i64, &'static str, Fact)>,
) -> ApiResult<()> {
    let mut pk = Vec::new();
    let mut text: [Vec<Option<String>>; 8] = Default::default();
    let mut ints: [Vec<Option<i64>>; 6] = Default::default();
    let mut floats: [Vec<Option<f64>>; 2] = Default::default();
    let mut flags: [Vec<i64>; 2] = Default::default();
    for (p, kind, f) in facts {
        pk.push(p);
        let t = [
            Some(f.id),
            Some(kind.to_string()),
            Some(f.patient),
            f.tokens[0].clone(),
            f.tokens[1].clone(),
            f.tokens[2].clone(),
            f.reference,
            f.pair.as_ref().map(|(c, _)| c.clone()),
        ];
        for (col, v) in text.iter_mut().zip(t) {
            col.push(v);
        }
        for (i, d) in f.dates.iter().enumerate() {
            ints[2 * i].push(d.map(|d| d.0));
            ints[2 * i + 1].push(d.map(|d| d.1));
        }
        floats[0].push(f.quantity);
        floats[1].push(f.pair.map(|(_, v)| v));
        flags[0].push(i64::from(f.flags[0]));
        flags[1].push(i64::from(f.flags[1]));
    }
    let n = pk.len();
    if n == 0 {
        return Ok(());
    }
    let [id, kind, patient, t1, t2, t3, rf, pc] = text;
    let [d1l, d1h, d2l, d2h, d3l, d3h] = ints;
    let [qv, pv] = floats;
    let [f1, f2] = flags;
    let columns = vec![
        Column::Int(pk),
        Column::Text(vec![Some(ty.to_string()); n]),
        Column::Text(id),
        Column::Text(kind),
        Column::Text(patient),
        Column::OptInt(d1l),
        Column::OptInt(d1h),
        Column::OptInt(d2l),
        Column::OptInt(d2h),
        Column::OptInt(d3l),
        Column::OptInt(d3h),
        Column::Text(t1),
        Column::Text(t2),
        Column::Text(t3),
        Column::Text(rf),
        Column::OptFloat(qv),
        Column::Text(pc),
        Column::OptFloat(pv),
        Column::Int(f1),
        Column::Int(f2),
    ];
    let mut names = vec!["resource_pk", "res_type"];
    names.extend(STORED.split(", "));
    for q in bulk_insert(conn, "measure_facts", &names, columns, "") {
        execute(conn, q).map_err(db_error)?;
    }
    Ok(())
}

/// [`run`] over the stored facts of an installed kind.
fn run_stored(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    q: &FactQuery,
    patients: Option<&[String]>,
) -> ApiResult<Vec<Fact>> {
    let pg = is_pg(conn);
    let mut b = Builder { n: 0, vis, pg };
    let mut s = Sql::new();
    // Only the columns the kind keeps (the others are NULL in every row; not sending them
    // halves what PostgreSQL formats and the server decodes for a large kind).
    let col = |used: bool, name: &str, ty: &str| -> String {
        if used {
            format!("r.{name}")
        } else {
            format!("CAST(NULL AS {ty})")
        }
    };
    let flag = |used: bool, name: &str| -> String {
        if used {
            format!("r.{name}")
        } else {
            "CAST(0 AS BIGINT)".into()
        }
    };
    let mut cols = vec![if q.without_id {
        "''".to_string()
    } else {
        "r.res_id".to_string()
    }];
    cols.push("r.patient".into());
    for i in 1..=3 {
        cols.push(col(q.dates.len() >= i, &format!("d{i}l"), "BIGINT"));
        cols.push(col(q.dates.len() >= i, &format!("d{i}h"), "BIGINT"));
    }
    for i in 1..=3 {
        cols.push(col(q.tokens.len() >= i, &format!("t{i}"), "TEXT"));
    }
    cols.push(col(q.reference.is_some(), "rf", "TEXT"));
    cols.push(col(q.quantity.is_some(), "qv", "DOUBLE PRECISION"));
    s.push("SELECT ").push(&cols.join(", "));
    // The linked dates from the target's stored facts: for a whole population one grouped
    // join (hash joins over the linked rows), for a few patients a probe per fact.
    let linked = q
        .linked
        .as_ref()
        .and_then(|l| Some((l, l.kind.filter(|k| is_installed(k))?)));
    let join = |s: &mut Sql, b: &mut Builder, l: &Linked, kind: &str| {
        s.push("FROM search_reference lr JOIN (SELECT resource_pk AS pk, res_id, kind, d1l, d1h FROM measure_facts) lf ON lf.kind = ")
            .text(kind)
            .push(&format!(
                " AND lf.res_id = {} WHERE lr.res_type = ",
                crate::store::sql::as_resource_key(pg, "lr.target_id")
            ))
            .text(q.ty.clone())
            .push(" AND lr.param = ")
            .text(l.ref_param.clone())
            .push(" AND lr.target_type = ")
            .text(l.target_type.clone());
        if let Some((low, high)) = q.narrow.linked_ends {
            s.push(" AND lf.d1h > ")
                .int(low)
                .push(" AND lf.d1h <= ")
                .int(high);
        }
        b.and_visible(s, &l.target_type, "lf");
    };
    let grouped = linked.filter(|_| patients.is_none());
    match (linked, grouped) {
        (_, Some(_)) => {
            s.push(", l.ll, l.lh");
        }
        (Some((l, kind)), None) => {
            s.push(", (SELECT MIN(lf.d1l) ");
            join(&mut s, &mut b, l, kind);
            s.push(" AND lr.resource_pk = r.pk) AS ll, (SELECT MAX(lf.d1h) ");
            join(&mut s, &mut b, l, kind);
            s.push(" AND lr.resource_pk = r.pk) AS lh");
        }
        (None, None) => linked_columns(&mut s, &mut b, q),
    }
    let cols = [
        col(q.pairs.is_some(), "pc", "TEXT"),
        col(q.pairs.is_some(), "pv", "DOUBLE PRECISION"),
        flag(!q.flags.is_empty(), "f1"),
        flag(q.flags.len() >= 2, "f2"),
    ];
    s.push(", ")
        .push(&cols.join(", "))
        .push(" FROM (SELECT resource_pk AS pk, ")
        .push(STORED)
        .push(" FROM measure_facts) r");
    if let Some((l, kind)) = grouped {
        // Narrowed to the linked ends, a fact without one is not read at all.
        s.push(if q.narrow.linked_ends.is_some() {
            " JOIN"
        } else {
            " LEFT JOIN"
        })
        .push(" (SELECT lr.resource_pk, MIN(lf.d1l) AS ll, MAX(lf.d1h) AS lh ");
        join(&mut s, &mut b, l, kind);
        s.push(" GROUP BY lr.resource_pk) l ON l.resource_pk = r.pk");
    }
    s.push(" WHERE r.kind = ").text(q.kind.unwrap_or_default());
    if let Some(p) = patients {
        s.push(" AND r.patient IN ").text_list(p);
    }
    for c in &q.filters {
        s.push(" AND ");
        match c {
            Cond::Overlaps { param, low, high } if q.dates.iter().take(3).any(|d| d == param) => {
                let i = 1 + q.dates.iter().position(|d| d == param).unwrap_or(0);
                s.push(&format!("r.d{i}h > "))
                    .int(*low)
                    .push(&format!(" AND r.d{i}l < "))
                    .int(*high);
            }
            _ => cond(&mut s, c, &q.ty),
        }
    }
    narrow(&mut s, &mut b, q);
    b.and_visible(&mut s, &q.ty, "r");
    read_rows(conn, &s)
}

/// The narrowings ([`Narrow`]) of kind `q` on stored fact row `r`.
fn narrow(s: &mut Sql, b: &mut Builder, q: &FactQuery) {
    let n = &q.narrow;
    let (low, high) = n.begins.unwrap_or((i64::MIN, i64::MAX));
    if n.begins.is_some() {
        s.push(" AND r.d1l >= ")
            .int(low)
            .push(" AND r.d1l < ")
            .int(high);
    }
    let has = n
        .patient_has
        .and_then(|k| kinds().iter().find(|x| x.kind == Some(k)));
    if let Some(k) = has {
        s.push(" AND r.patient IN (SELECT h.patient FROM (SELECT resource_pk AS pk, kind, patient FROM measure_facts) h WHERE h.kind = ")
            .text(k.kind.unwrap_or_default());
        b.and_visible(s, &k.ty, "h");
        s.push(")");
    }
    // The latest: no later fact of the patient (of those the same narrowing keeps, and the
    // caller may see). Only without request filters, which the later fact would have to meet
    // as well.
    let latest = n.latest && !q.dates.is_empty() && q.filters.is_empty();
    if latest {
        s.push(" AND NOT EXISTS (SELECT 1 FROM (SELECT resource_pk AS pk, kind, patient, d1l FROM measure_facts) n WHERE n.kind = ")
            // The kind as a value (not `r.kind`): PostgreSQL then reads its partition only.
            .text(q.kind.unwrap_or_default())
            .push(" AND n.patient = r.patient AND n.d1l > r.d1l AND n.d1l < ")
            .int(high);
        b.and_visible(s, &q.ty, "n");
        s.push(")");
    }
    // Flagged after the latest: skipped with it.
    if n.flagged && !q.flags.is_empty() && (latest || !n.latest) {
        s.push(" AND r.f1 = 1");
    }
}

/// `(… OR …)` over the token rows `a` for the accepted (system, code) pairs.
fn token_matches(s: &mut Sql, a: &str, any: &[TokenMatch]) {
    if any.is_empty() {
        s.push("1 = 0");
        return;
    }
    s.push("(");
    for (i, m) in any.iter().enumerate() {
        if i > 0 {
            s.push(" OR ");
        }
        s.push("(1 = 1");
        match &m.system {
            SystemMatch::Any => {}
            SystemMatch::Is(x) => {
                s.push(&format!(" AND {a}.system = ")).text(x.clone());
            }
            SystemMatch::IsOrAbsent(x) => {
                s.push(&format!(" AND ({a}.system = "))
                    .text(x.clone())
                    .push(&format!(" OR {a}.system IS NULL)"));
            }
        }
        match &m.code {
            CodeMatch::Any => {}
            CodeMatch::Is(x) => {
                s.push(&format!(" AND {a}.code = ")).text(x.clone());
            }
            CodeMatch::Prefix(x) => {
                s.push(&format!(" AND {a}.code >= "))
                    .text(x.clone())
                    .push(&format!(" AND {a}.code < "))
                    .text(format!("{x}{TOP}"));
            }
        }
        s.push(")");
    }
    s.push(")");
}

/// The predicate of a condition on row `r` of type `ty`.
fn cond(s: &mut Sql, c: &Cond, ty: &str) {
    match c {
        Cond::Token { param, any } => {
            s.push(
                "EXISTS (SELECT 1 FROM search_token c WHERE c.resource_pk = r.pk AND c.res_type = ",
            )
            .text(ty)
            .push(" AND c.param = ")
            .text(param.clone())
            .push(" AND ");
            token_matches(s, "c", any);
            s.push(")");
        }
        Cond::Ref {
            param,
            target_type,
            ids,
        } => {
            if ty == "Patient" && param.is_empty() {
                s.push("r.res_id IN ").text_list(ids);
                return;
            }
            s.push("EXISTS (SELECT 1 FROM search_reference c WHERE c.resource_pk = r.pk AND c.param = ")
                .text(param.clone())
                .push(" AND c.target_type = ")
                .text(target_type.clone())
                .push(" AND c.target_id IN ")
                .text_list(ids)
                .push(")");
        }
        Cond::Overlaps { param, low, high } => {
            s.push(
                "EXISTS (SELECT 1 FROM search_date c WHERE c.resource_pk = r.pk AND c.res_type = ",
            )
            .text(ty)
            .push(" AND c.param = ")
            .text(param.clone())
            .push(" AND c.low < ")
            .int(*high)
            .push(" AND c.high > ")
            .int(*low)
            .push(")");
        }
        Cond::Not(inner) => {
            s.push("NOT (");
            cond(s, inner, ty);
            s.push(")");
        }
        Cond::Any(list) => {
            if list.is_empty() {
                s.push("1 = 0");
                return;
            }
            s.push("(");
            for (i, x) in list.iter().enumerate() {
                if i > 0 {
                    s.push(" OR ");
                }
                cond(s, x, ty);
            }
            s.push(")");
        }
    }
}

/// `SELECT DISTINCT resource_pk AS pk …` of the index rows a leading condition matches, when
/// it can drive the query.
fn driving(c: &Cond, ty: &str) -> Option<Sql> {
    let mut s = Sql::new();
    match c {
        Cond::Token { param, any } => {
            s.push("SELECT DISTINCT c.resource_pk AS pk FROM search_token c WHERE c.res_type = ")
                .text(ty)
                .push(" AND c.param = ")
                .text(param.clone())
                .push(" AND ");
            token_matches(&mut s, "c", any);
        }
        Cond::Ref {
            param,
            target_type,
            ids,
        } if !(ty == "Patient" && param.is_empty()) => {
            s.push(
                "SELECT DISTINCT c.resource_pk AS pk FROM search_reference c WHERE c.res_type = ",
            )
            .text(ty)
            .push(" AND c.param = ")
            .text(param.clone())
            .push(" AND c.target_type = ")
            .text(target_type.clone())
            .push(" AND c.target_id IN ")
            .text_list(ids);
        }
        Cond::Overlaps { param, low, high } => {
            s.push("SELECT DISTINCT c.resource_pk AS pk FROM search_date c WHERE c.res_type = ")
                .text(ty)
                .push(" AND c.param = ")
                .text(param.clone())
                .push(" AND c.low < ")
                .int(*high)
                .push(" AND c.high > ")
                .int(*low);
        }
        _ => return None,
    }
    Some(s)
}
