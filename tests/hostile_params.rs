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

// Found by schemathesis (stateful phase, POST /fhir/Task): the date-order invariants (Task
// inv-1 authoredOn ≤ lastModified, Period per-1 start ≤ end) cut malformed values at a byte
// index, which panicked inside a multi-byte character (500). Such a body is a 422 now.
backend_tests!(non_ascii_dates_in_invariants, |s| {
    // Each pair makes the common-prefix cut land inside a multi-byte character.
    let bad = [
        ("àÔ½", "2026-"),
        ("é\u{a61f3}x", "2026"),
        ("2026-01-01", "2026-01-0½T"),
        ("2026-01-0½T", "2026-01-01"),
    ];
    for (a, b) in bad {
        let task = json!({"resourceType": "Task", "status": "requested", "intent": "order",
                          "authoredOn": a, "lastModified": b});
        let r = s.post("Task", &task);
        assert_eq!(r.status, 422, "Task {a:?}/{b:?}: {}", r.body);
        let plan = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                          "subject": {"reference": "Patient/p1"}, "period": {"start": a, "end": b}});
        let r = s.post("CarePlan", &plan);
        assert_eq!(r.status, 422, "CarePlan period {a:?}/{b:?}: {}", r.body);
        // The same through $validate.
        let r = s.post("Task/$validate", &task);
        assert!(
            r.status == 200 || r.status == 422,
            "$validate {a:?}/{b:?}: {} {}",
            r.status,
            r.body
        );
        assert!(r.body.contains("OperationOutcome"), "{}", r.body);
    }
    s.get("metadata").expect(200);
});
