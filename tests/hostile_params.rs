//! Regressions found by schemathesis against the OpenAPI document: page tokens and other
//! parameters with non-ASCII text must answer 400, never panic a worker (a panic there once
//! answered 500 and took a blocking thread with it).
mod common;
use common::*;

backend_tests!(non_ascii_page_tokens, |s| {
    s.put(
        "Patient/p1",
        &json!({"resourceType": "Patient", "id": "p1"}),
    )
    .expect(201);
    for token in ["%C3%BC", "%F2%A5%A2%B0k", "", "a%C3%BC", "%C3%BC1"] {
        for path in [
            format!("Patient/_history?_page={token}"),
            format!("_history?_page={token}"),
            format!("Patient/p1/_history?_page={token}"),
            format!("Patient?_page={token}"),
            format!("Patient/p1/$everything?_page={token}"),
        ] {
            let r = s.get(&path);
            assert!(
                r.status == 400 || (token.is_empty() && r.status == 200),
                "{path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    // The server still answers afterwards.
    s.get("Patient/p1").expect(200);
});
