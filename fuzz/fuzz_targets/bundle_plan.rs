//! Bundle → transaction plan: the pure part of a transaction or batch, as service::bundle runs
//! it before touching the database: parse the Bundle (entries, request URLs, methods, fullUrl,
//! ifMatch), the processing order, server-assigned ids and the urn:uuid reference map, then for
//! each entry in order its conditional criteria, its resource with references rewritten, its
//! conditional references, its patch document (PATCH) or its validation (POST/PUT).
//! Oracles: no panic; refusals are client errors; the order is a permutation of the entries by
//! DELETE, POST, PUT/PATCH, GET/HEAD, stable within a rank.
#![no_main]
use icm_fhir::config::WritePolicy;
use icm_fhir::fhir::search::query::SearchQuery;
use icm_fhir::fhir::transaction::{self as tx, Entry, Method};
use icm_fhir::service::bundle::assign_ids;
use icm_fhir::service::write::integrity::validate_for_write;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn criteria(ty: &str, q: &str) {
    if let Err(e) = SearchQuery::parse(ty, q) {
        common::client_error(&e);
    }
}

fuzz_target!(|data: &[u8]| {
    let (_kind, parsed) = match tx::parse(data, common::BASE, 1000) {
        Ok(p) => p,
        Err(e) => return common::client_error(&e),
    };
    let mut entries: Vec<Entry> = Vec::new();
    for e in parsed {
        match e {
            Ok(e) => entries.push(e),
            Err(e) => common::client_error(&e),
        }
    }
    let order = tx::processing_order(&entries);
    let mut seen = order.clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..entries.len()).collect::<Vec<_>>());
    for w in order.windows(2) {
        let (a, b) = (&entries[w[0]], &entries[w[1]]);
        assert!(
            (a.method.rank(), a.index) < (b.method.rank(), b.index),
            "processing order"
        );
    }
    let (_ids, refs) = assign_ids(&entries);
    let policy = WritePolicy::default();
    for &i in &order {
        let e = &entries[i];
        if let Some(q) = &e.target.query {
            criteria(&e.target.ty, q);
        }
        if let Some(q) = &e.if_none_exist {
            criteria(&e.target.ty, q);
        }
        let Some(mut r) = e.resource() else {
            continue;
        };
        tx::rewrite_references(&mut r, &refs);
        let mut conditional = Vec::new();
        tx::conditional_references(&r, &mut conditional);
        for c in &conditional {
            if let Some((ty, q)) = c.split_once('?') {
                criteria(ty, q);
            }
        }
        match e.method {
            Method::Patch => {
                if let Err(err) = tx::patch_document(e, r) {
                    common::client_error(&err);
                }
            }
            Method::Post | Method::Put => {
                if let Err(err) = validate_for_write(&r, &policy) {
                    common::client_error(&err);
                }
            }
            _ => {}
        }
    }
});
