//! Query string → search plan: `Type?query` is parsed as a search (SearchQuery::parse, the one
//! search-parameter parser, with the server's base for absolute references) and, when the
//! server would run it, turned into the page and count statements for PostgreSQL and SQLite,
//! for a caller who sees everything and for one limited to two patients' compartments.
//! Oracles: no panic; refusals are client errors; every `?` placeholder in the SQL has exactly
//! one bound value (no input ever reaches the SQL text).
#![no_main]
use std::collections::BTreeSet;

use icm_fhir::fhir::search::query::SearchQuery;
use icm_fhir::store::search::{count_plan, plan};
use icm_fhir::store::sql::Sql;
use icm_fhir::store::visibility::{Everything, Rows, Visibility};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

/// A patient-limited caller: the compartments of two patients.
struct TwoPatients(BTreeSet<String>);

impl Visibility for TwoPatients {
    fn rows(&self, ty: &str) -> Rows<'_> {
        match ty {
            "AuditEvent" => Rows::Hidden,
            "Practitioner" => Rows::Ids(&self.0),
            _ => Rows::Patients(&self.0),
        }
    }
}

fn check_sql(s: &Sql, pg: bool) {
    let placeholders = s.text.matches('?').count();
    assert_eq!(
        placeholders,
        s.binds.len(),
        "SQL text and bound values disagree (pg: {pg}): {}",
        s.text
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ty, qs) = text.split_once('?').unwrap_or((text, ""));
    let mut q = match SearchQuery::parse(ty, qs) {
        Ok(q) => q,
        Err(e) => return common::client_error(&e),
    };
    q.set_base(common::BASE);
    // The search service refuses malformed values of known parameters (400) before planning.
    if !q.invalid.is_empty() {
        return;
    }
    let limited = TwoPatients(["p1".to_string(), "p-2".to_string()].into());
    let count_limit = q.count.unwrap_or(20).clamp(1, 1000);
    for vis in [&Everything as &dyn Visibility, &limited] {
        for pg in [true, false] {
            match plan(&q, count_limit, vis, pg) {
                Ok((_, s)) => check_sql(&s, pg),
                Err(e) => common::client_error(&e),
            }
            match count_plan(&q, vis, pg) {
                Ok(s) => check_sql(&s, pg),
                Err(e) => common::client_error(&e),
            }
        }
    }
});
