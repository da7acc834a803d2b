//! Helpers of the search tests: exact matching sets, all pages followed.
#![allow(dead_code)]

use super::TestServer;
use serde_json::Value;

/// `backend_tests!` with referential integrity off: search fixtures refer to resources that are
/// created later or never (`Patient/x`), as a bulk load does, and delete referenced ones.
#[macro_export]
macro_rules! search_tests {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn tweak(c: &mut icm_fhir::config::Config) {
                c.referential_integrity = "off".into();
            }
            #[test]
            fn sqlite() {
                let s = $crate::common::start_with($crate::common::Backend::Sqlite, tweak).unwrap();
                let f: &dyn Fn(&$crate::common::TestServer) = &$body;
                f(&s);
            }
            #[test]
            fn postgres() {
                if let Some(s) =
                    $crate::common::start_with($crate::common::Backend::Postgres, tweak)
                {
                    let f: &dyn Fn(&$crate::common::TestServer) = &$body;
                    f(&s);
                }
            }
        }
    };
}

/// The URL of a Bundle link (`next`, `previous`, `self`).
pub fn link(b: &Value, rel: &str) -> Option<String> {
    b["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == rel)
        .map(|l| l["url"].as_str().unwrap().to_string())
}

pub fn next_link(b: &Value) -> Option<String> {
    link(b, "next")
}

/// Ids of the `match` entries of one searchset Bundle, in order.
pub fn match_ids(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// Ids of the `match` entries of a search, all pages followed, in order.
#[track_caller]
pub fn ids(s: &TestServer, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut url = q.to_string();
    for _ in 0..50 {
        let r = s.get(&url);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        let b = r.json();
        assert_eq!(b["type"], "searchset");
        out.extend(match_ids(&b));
        match next_link(&b) {
            Some(n) => url = n,
            None => return out,
        }
    }
    panic!("too many pages for {q}");
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn set(list: &[&str]) -> Vec<String> {
    sorted(list.iter().map(|s| s.to_string()).collect())
}

/// The matches of `q` are exactly `expected` (in any order).
#[track_caller]
pub fn check(s: &TestServer, q: &str, expected: &[&str]) {
    assert_eq!(
        sorted(ids(s, q)),
        set(expected),
        "query {q} on {:?}",
        s.backend
    );
}

/// PUT a resource at its `Type/id` (created or updated); the stored resource.
#[track_caller]
pub fn put(s: &TestServer, v: Value) -> Value {
    let path = format!(
        "{}/{}",
        v["resourceType"].as_str().unwrap(),
        v["id"].as_str().unwrap()
    );
    let r = s.put(&path, &v);
    assert!(r.status == 201 || r.status == 200, "{path}: {}", r.body);
    r.json()
}
