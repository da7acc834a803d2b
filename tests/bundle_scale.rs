//! Synthea-sized transaction Bundles on both backends: a 5,000-entry patient history (Patient,
//! Organizations and Practitioners with ifNoneExist, Encounters, Observations, Conditions, all
//! linked by urn:uuid fullUrls) is accepted in one request with every reference rewritten; the
//! same Bundle with one invalid entry near its end leaves nothing behind.
mod common;
use common::*;

const SYNTHEA: &str = "https://github.com/synthetichealth/synthea";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

fn post_entry(resource: Value, full_url: &str, if_none_exist: Option<String>) -> Value {
    let mut req = json!({"method": "POST", "url": resource["resourceType"]});
    if let Some(c) = if_none_exist {
        req["ifNoneExist"] = json!(c);
    }
    json!({"fullUrl": full_url, "resource": resource, "request": req})
}

fn urn(kind: &str, n: usize) -> String {
    // Deterministic, well-formed UUIDs: the kind and the counter in the last group.
    let k = kind
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32))
        & 0xffff;
    format!("urn:uuid:6f1c{k:04x}-0000-4000-8000-{n:012x}")
}

/// What the Bundle holds, to check against the server afterwards.
#[derive(Default)]
struct Shape {
    observations: usize,
    encounters: usize,
    conditions: usize,
}

/// A Synthea-shaped transaction of exactly `n` entries (n ≥ 7).
fn synthea_shaped(n: usize) -> (Value, Shape) {
    let mut entries = Vec::with_capacity(n);
    let mut shape = Shape::default();
    let patient = urn("Patient", 0);
    entries.push(post_entry(
        json!({"resourceType": "Patient", "identifier": [{"system": SYNTHEA, "value": "p-5000"}],
            "name": [{"family": "Synthea", "given": ["Shaped"]}], "gender": "female", "birthDate": "1950-03-04"}),
        &patient,
        None,
    ));
    let orgs: Vec<String> = (0..3).map(|i| urn("Organization", i)).collect();
    for (i, f) in orgs.iter().enumerate() {
        entries.push(post_entry(
            json!({"resourceType": "Organization", "identifier": [{"system": SYNTHEA, "value": format!("org-{i}")}], "name": format!("Clinic {i}")}),
            f,
            Some(format!("identifier={SYNTHEA}|org-{i}")),
        ));
    }
    let pracs: Vec<String> = (0..3).map(|i| urn("Practitioner", i)).collect();
    for (i, f) in pracs.iter().enumerate() {
        entries.push(post_entry(
            json!({"resourceType": "Practitioner", "identifier": [{"system": NPI, "value": format!("npi-{i}")}], "name": [{"family": format!("Doctor{i}")}]}),
            f,
            Some(format!("identifier={NPI}|npi-{i}")),
        ));
    }
    let loinc = [
        ("8302-2", "cm"),
        ("29463-7", "kg"),
        ("8867-4", "/min"),
        ("2339-0", "mg/dL"),
        ("4548-4", "%"),
        ("2093-3", "mg/dL"),
        ("38483-4", "mg/dL"),
        ("9279-1", "/min"),
    ];
    let mut k = 0;
    while entries.len() < n {
        let enc = urn("Encounter", k);
        let day = format!(
            "{:04}-{:02}-{:02}",
            1980 + k / 12 % 40,
            k % 12 + 1,
            k % 28 + 1
        );
        entries.push(post_entry(
            json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": patient},
                "participant": [{"individual": {"reference": pracs[k % 3]}}],
                "period": {"start": format!("{day}T09:00:00Z"), "end": format!("{day}T09:30:00Z")},
                "serviceProvider": {"reference": orgs[k % 3]}}),
            &enc,
            None,
        ));
        shape.encounters += 1;
        for (j, (code, unit)) in loinc.iter().enumerate() {
            if entries.len() >= n {
                break;
            }
            entries.push(post_entry(
                json!({"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": patient}, "encounter": {"reference": enc},
                    "effectiveDateTime": format!("{day}T09:10:00Z"),
                    "valueQuantity": {"value": 50 + (k * 7 + j) % 60, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}),
                &urn("Observation", k * 10 + j),
                None,
            ));
            shape.observations += 1;
        }
        if entries.len() < n && k % 2 == 0 {
            entries.push(post_entry(
                json!({"resourceType": "Condition",
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
                    "subject": {"reference": patient}, "encounter": {"reference": enc},
                    "onsetDateTime": format!("{day}T09:20:00Z")}),
                &urn("Condition", k),
                None,
            ));
            shape.conditions += 1;
        }
        k += 1;
    }
    (
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        shape,
    )
}

fn count(s: &TestServer, query: &str) -> u64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    s.get(&format!("{query}{sep}_summary=count")).json()["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total for {query}"))
}

const TYPES: &[&str] = &[
    "Patient",
    "Organization",
    "Practitioner",
    "Encounter",
    "Observation",
    "Condition",
];

fn counts(s: &TestServer) -> Vec<u64> {
    TYPES.iter().map(|t| count(s, t)).collect()
}

fn post_slow(s: &TestServer, body: &Value, prefer: &str) -> Resp {
    // A long-running request: an agent with a generous timeout (debug builds are slow).
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(600))
        .build();
    let r = agent
        .post(&s.base)
        .set("Content-Type", "application/fhir+json")
        .set("Prefer", prefer)
        .send_string(&body.to_string());
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error {e}"),
    };
    Resp {
        status: resp.status(),
        headers: vec![],
        body: resp.into_string().unwrap(),
    }
}

backend_tests!(transaction_of_5000_entries_is_atomic_and_rewritten, |s| {
    // One Organization of the Bundle exists already: its ifNoneExist matches it.
    let existing = s.create(json!({"resourceType": "Organization",
        "identifier": [{"system": SYNTHEA, "value": "org-1"}], "name": "Clinic 1"}));
    let existing = existing["id"].as_str().unwrap().to_string();
    let (bundle, shape) = synthea_shaped(5000);
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 5000);
    let before = counts(s);
    let t = std::time::Instant::now();
    let r = post_slow(s, &bundle, "return=minimal");
    eprintln!(
        "5,000-entry transaction on {:?}: {} ms",
        s.backend,
        t.elapsed().as_millis()
    );
    r.expect(200);
    let out = r.json();
    let e = out["entry"].as_array().unwrap();
    assert_eq!(e.len(), 5000);
    let created = e
        .iter()
        .filter(|x| x["response"]["status"] == "201 Created")
        .count();
    assert_eq!(created, 4999);
    assert_eq!(e[2]["response"]["status"], "200 OK");
    assert_eq!(
        e[2]["fullUrl"],
        json!(format!("{}/Organization/{existing}", s.base))
    );
    assert!(!r.body.contains("urn:uuid:"));
    let after = counts(s);
    let want = [
        1,
        2,
        3,
        shape.encounters as u64,
        shape.observations as u64,
        shape.conditions as u64,
    ];
    for (i, t) in TYPES.iter().enumerate() {
        assert_eq!(after[i] - before[i], want[i], "{t}");
    }
    // Every reference was rewritten to the ids the server assigned (or found).
    let pid = e[0]["response"]["location"].as_str().unwrap()["Patient/".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        count(s, &format!("Observation?subject=Patient/{pid}")),
        shape.observations as u64
    );
    assert_eq!(
        count(s, &format!("Condition?subject=Patient/{pid}")),
        shape.conditions as u64
    );
    assert_eq!(
        count(
            s,
            &format!("Encounter?service-provider=Organization/{existing}")
        ),
        (shape.encounters as u64 + 1) / 3,
        "every third Encounter names the Organization that existed before"
    );
    let enc = e[7]["response"]["location"].as_str().unwrap()["Encounter/".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        count(s, &format!("Observation?encounter=Encounter/{enc}")),
        8
    );
    let obs = s
        .get(&format!("Observation?encounter=Encounter/{enc}&_count=1"))
        .json();
    let o = &obs["entry"][0]["resource"];
    assert_eq!(o["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(o["encounter"]["reference"], format!("Encounter/{enc}"));
});

backend_tests!(
    transaction_of_5000_entries_with_one_bad_entry_leaves_nothing,
    |s| {
        s.create(json!({"resourceType": "Organization",
        "identifier": [{"system": SYNTHEA, "value": "org-1"}], "name": "Clinic 1"}));
        let (mut bundle, _) = synthea_shaped(5000);
        let at = 4990;
        assert_eq!(
            bundle["entry"][at]["resource"]["resourceType"],
            "Observation"
        );
        bundle["entry"][at]["resource"]["status"] = json!("not-a-status");
        let before = counts(s);
        let r = post_slow(s, &bundle, "return=representation");
        r.expect(422);
        let oo = r.json();
        let d = oo["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            d.starts_with(&format!("Bundle.entry[{at}] (POST Observation)")),
            "{d}"
        );
        assert_eq!(counts(s), before);
        assert_eq!(count(s, "Observation"), 0);
    }
);

#[test]
fn bundle_body_limit_is_its_own() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(s) = start_with(backend, |c| {
            c.max_body = 2000;
            c.max_bundle_body = 20_000;
        }) else {
            continue;
        };
        // A Bundle larger than ICM_MAX_BODY but within ICM_MAX_BUNDLE_BODY is accepted.
        let (small, _) = synthea_shaped(20);
        assert!(small.to_string().len() > 2000);
        post_slow(&s, &small, "return=minimal").expect(200);
        let (big, _) = synthea_shaped(200);
        assert!(big.to_string().len() > 20_000);
        let r = post_slow(&s, &big, "return=minimal");
        r.expect_outcome(413, "too-long");
        // Single resources keep ICM_MAX_BODY.
        let p = json!({"resourceType": "Patient", "name": [{"text": "x".repeat(3000)}]});
        s.post("Patient", &p).expect_outcome(413, "too-long");
    }
}
