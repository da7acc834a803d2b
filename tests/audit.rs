//! The audit trail's own storage (store::audit): what is recorded for each kind of request, and
//! the AuditEvent search parameters, read, vread and history — on both backends.
mod common;
use common::auth::*;
use common::*;

fn admin() -> String {
    mint(&claims("root", "user/*.cruds", json!({"role": "admin"})))
}

/// ids of the AuditEvents a search finds (every page), in order.
fn ids(s: &TestServer, tok: &str, query: &str) -> Vec<String> {
    let r = s.as_token(Some(tok), "GET", &format!("AuditEvent?{query}"), None);
    r.expect(200);
    let b = r.json();
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// The one AuditEvent a search finds.
fn only(s: &TestServer, tok: &str, query: &str) -> Value {
    let r = s.as_token(Some(tok), "GET", &format!("AuditEvent?{query}"), None);
    r.expect(200);
    let b = r.json();
    let m: Vec<Value> = b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["search"]["mode"] == "match")
        .collect();
    assert_eq!(m.len(), 1, "AuditEvent?{query}: {}", r.body);
    m[0]["resource"].clone()
}

secure_tests!(search_parameters_of_the_trail, |s: &TestServer| {
    let root = admin();
    let sys = mint(&claims("svc", "system/*.cruds", json!({})));
    let p = s
        .as_token(
            Some(&sys),
            "POST",
            "Patient",
            Some(&json!({"resourceType": "Patient", "name": [{"family": "Audit"}]})),
        )
        .json();
    let pid = p["id"].as_str().unwrap().to_string();
    let doc = s
        .as_token(
            Some(&sys),
            "POST",
            "Practitioner",
            Some(&json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})),
        )
        .json();
    let did = doc["id"].as_str().unwrap().to_string();
    let plan = s
        .as_token(
            Some(&sys),
            "POST",
            "CarePlan",
            Some(
                &json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                "subject": {"reference": format!("Patient/{pid}")}}),
            ),
        )
        .json();
    let cpid = plan["id"].as_str().unwrap().to_string();
    // A practitioner (admin, so no care-team rule) reads the plan; an unknown caller is refused.
    let reader = mint(&claims(
        "dr-who",
        "user/*.rs",
        json!({"fhirUser": format!("Practitioner/{did}"), "role": "admin"}),
    ));
    s.as_token(Some(&reader), "GET", &format!("CarePlan/{cpid}"), None)
        .expect(200);
    s.as_token(None, "GET", &format!("Patient/{pid}"), None)
        .expect(401);

    // The read: one event, found by each of its values.
    let read = only(s, &root, &format!("entity=CarePlan/{cpid}&action=R"));
    let rid = read["id"].as_str().unwrap().to_string();
    assert_eq!(read["outcome"], "0");
    assert_eq!(
        read["agent"][0]["who"]["reference"],
        format!("Practitioner/{did}")
    );
    for q in [
        format!("agent=Practitioner/{did}"),
        format!("agent={did}"),
        format!("agent:Practitioner={did}"),
        "altid=dr-who".to_string(),
        format!("entity={cpid}&altid=dr-who"),
        format!("patient={pid}&altid=dr-who"),
        format!("patient=Patient/{pid}&altid=dr-who"),
        format!("entity=Patient/{pid}&altid=dr-who"),
        "subtype=read&altid=dr-who".to_string(),
        "subtype=http://hl7.org/fhir/restful-interaction|read&altid=dr-who".to_string(),
        "address=127.0&altid=dr-who".to_string(),
        "address:exact=127.0.0.1&altid=dr-who".to_string(),
        "date=ge2020-01-01&altid=dr-who".to_string(),
        format!("_id={rid}"),
    ] {
        assert_eq!(ids(s, &root, &q), vec![rid.clone()], "AuditEvent?{q}");
    }
    for q in [
        "altid=dr-who&subtype=update",
        "altid=dr-who&subtype=urn:other|read",
        "altid=dr-who&outcome=4",
        "altid=dr-who&action=C",
        "altid=dr-who&date=lt2020-01-01",
        "altid=dr-who&address=10.",
        "altid=dr-who&patient=Practitioner/x",
        "altid=dr-who&agent:missing=true",
        "altid=dr-who&altid:not=dr-who",
    ] {
        assert!(
            ids(s, &root, q).is_empty(),
            "AuditEvent?{q} should find nothing"
        );
    }
    // The refusal: outcome 4, an anonymous agent, the patient read that was refused.
    let refused = only(s, &root, &format!("entity=Patient/{pid}&outcome=4"));
    assert_eq!(refused["outcomeDesc"], "HTTP 401");
    assert!(ids(s, &root, "agent:missing=true&outcome=4")
        .contains(&refused["id"].as_str().unwrap().to_string()));

    // Writes are recorded with the new version.
    let created = only(s, &root, &format!("entity=CarePlan/{cpid}&action=C"));
    assert_eq!(
        created["entity"][0]["what"]["reference"],
        format!("CarePlan/{cpid}/_history/1")
    );
    assert_eq!(created["agent"][0]["altId"], "svc");

    // Sorting and paging: newest first, two per page, no event twice.
    let all = ids(s, &root, "_count=500&_sort=-date");
    assert!(all.len() >= 5, "{all:?}");
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some("AuditEvent?_count=2&_sort=-date".to_string());
    while let Some(url) = next {
        let b = s.as_token(Some(&root), "GET", &url, None).json();
        for e in b["entry"].as_array().cloned().unwrap_or_default() {
            let id = e["resource"]["id"].as_str().unwrap().to_string();
            assert!(!seen.contains(&id), "{id} on two pages");
            seen.push(id);
        }
        next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
    }
    // Later requests (these searches) add newer events at the front of the first page only.
    let in_order: Vec<String> = seen.iter().filter(|i| all.contains(i)).cloned().collect();
    assert_eq!(
        in_order, all,
        "the pages hold every event once, in the same order"
    );
    let dates: Vec<String> = ids(s, &root, "_count=500&_sort=date")
        .iter()
        .map(|i| {
            s.as_token(Some(&root), "GET", &format!("AuditEvent/{i}"), None)
                .json()["recorded"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = dates.clone();
    sorted.sort();
    assert_eq!(dates, sorted, "_sort=date is ascending by recorded");
    let count = s
        .as_token(
            Some(&root),
            "GET",
            "AuditEvent?altid=dr-who&_summary=count",
            None,
        )
        .json();
    assert_eq!(count["total"], 1);

    // Read, vread, history: one version, never more.
    s.as_token(Some(&root), "GET", &format!("AuditEvent/{rid}"), None)
        .expect(200);
    let v1 = s
        .as_token(
            Some(&root),
            "GET",
            &format!("AuditEvent/{rid}/_history/1"),
            None,
        )
        .json();
    assert_eq!(v1["id"], rid.as_str());
    assert_eq!(v1["meta"]["versionId"], "1");
    s.as_token(
        Some(&root),
        "GET",
        &format!("AuditEvent/{rid}/_history/2"),
        None,
    )
    .expect(404);
    let h = s
        .as_token(
            Some(&root),
            "GET",
            &format!("AuditEvent/{rid}/_history"),
            None,
        )
        .json();
    assert_eq!(h["entry"].as_array().unwrap().len(), 1);
    s.as_token(Some(&root), "GET", "AuditEvent/no-such-event", None)
        .expect(404);

    // Parameters not kept for AuditEvents are reported, strictly refused; chains refused.
    let r = s.as_token(
        Some(&root),
        "GET",
        "AuditEvent?type=rest&altid=dr-who",
        None,
    );
    r.expect(200);
    assert!(r.body.contains("\"outcome\""), "{}", r.body);
    let r = s.request(
        "GET",
        "AuditEvent?type=rest",
        &[
            ("Authorization", &format!("Bearer {root}")),
            ("Prefer", "handling=strict"),
        ],
        None,
    );
    r.expect(400);
    s.as_token(
        Some(&root),
        "GET",
        &format!("AuditEvent?patient={pid}&_include=AuditEvent:patient"),
        None,
    )
    .expect(400);
    s.as_token(
        Some(&root),
        "GET",
        &format!("Patient?_id={pid}&_revinclude=AuditEvent:patient"),
        None,
    )
    .expect(400);
    s.as_token(
        Some(&root),
        "GET",
        &format!("Patient?_has:AuditEvent:patient:action=R&_id={pid}"),
        None,
    )
    .expect(400);
});

secure_tests!(capabilities_of_the_trail, |s: &TestServer| {
    // Only the read side of AuditEvent is advertised, in the CapabilityStatement and OpenAPI.
    let cs = s.get("metadata").json();
    let ae = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "AuditEvent")
        .cloned()
        .unwrap();
    let mut codes: Vec<&str> = ae["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "history-instance",
            "history-type",
            "read",
            "search-type",
            "vread"
        ]
    );
    assert_eq!(ae["conditionalCreate"], false);
    let mut params: Vec<&str> = ae["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    params.sort();
    assert_eq!(
        params,
        [
            "_id",
            "_lastUpdated",
            "action",
            "address",
            "agent",
            "altid",
            "date",
            "entity",
            "outcome",
            "patient",
            "subtype"
        ]
    );
    let doc = s.get("/openapi.json").json();
    let item = &doc["paths"]["/fhir/AuditEvent/{id}"];
    assert!(item["get"].is_object() && item["put"].is_null() && item["delete"].is_null());
    assert!(doc["paths"]["/fhir/AuditEvent"]["post"].is_null());
    assert!(doc["paths"]["/fhir/Task/{id}"]["put"].is_object());
});
