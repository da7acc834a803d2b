//! The measure definitions on hand-computed cases (the HTTP tests in tests/measures.rs run the
//! same definitions through the search index on both backends).
use super::*;

fn day(s: &str) -> Day {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
}

fn period(a: &str, b: &str) -> Period {
    Period {
        first: day(a),
        last: day(b),
    }
}

fn episode(p: &str, start: &str, end: Option<&str>) -> Episode {
    Episode {
        id: format!("ep-{p}-{start}"),
        patient: p.into(),
        start: Some(day(start)),
        end: end.map(day),
        care_manager: Some("Practitioner/m1".into()),
        referral: None,
    }
}

fn stay(id: &str, p: &str, class: StayClass, admit: &str, discharge: Option<&str>) -> Stay {
    Stay {
        id: id.into(),
        patient: p.into(),
        class,
        status: if discharge.is_some() {
            "finished"
        } else {
            "in-progress"
        }
        .into(),
        admit: Some(day(admit)),
        discharge: discharge.map(day),
        excluded: false,
    }
}

#[test]
fn days_and_business_days() {
    assert_eq!(day_of(0), 0);
    assert_eq!(day_of(-1), -1);
    assert_eq!(format_day(day("2025-03-01")), "2025-03-01");
    assert_eq!(end_day(DAY_MICROS), Some(0));
    assert_eq!(end_day(i64::MAX), None);
    assert_eq!(start_day(i64::MIN), None);
    // 2026-11-27 is a Friday: its second business day is Tuesday 2026-12-01.
    assert!(is_business_day(day("2026-11-27")));
    assert!(!is_business_day(day("2026-11-28")));
    assert!(!is_business_day(day("2026-11-29")));
    assert_eq!(business_days_after(day("2026-11-27"), 2), day("2026-12-01"));
    assert_eq!(business_days_after(day("2026-11-28"), 2), day("2026-12-01"));
    assert_eq!(business_days_after(day("2026-11-23"), 2), day("2026-11-25"));
}

#[test]
fn catalogue() {
    assert_eq!(MeasureId::ALL.len(), 11);
    for m in MeasureId::ALL {
        assert_eq!(MeasureId::parse(m.id()), Some(m));
        assert_eq!(MeasureId::parse(&m.url()), Some(m));
        assert_eq!(MeasureId::parse(&format!("{}|0.1.0", m.url())), Some(m));
    }
    assert_eq!(MeasureId::parse("nope"), None);
}

#[test]
fn enrollment_spans_merge_overlaps_and_adjacent_days() {
    let s = enrollment_spans(&[
        episode("a", "2025-01-01", Some("2025-01-31")),
        episode("a", "2025-02-01", Some("2025-02-10")),
        episode("a", "2025-01-15", Some("2025-01-20")),
        episode("a", "2025-06-01", None),
        episode("b", "2025-03-01", Some("2025-02-01")),
    ]);
    assert_eq!(
        s["a"],
        vec![
            (day("2025-01-01"), day("2025-02-10")),
            (day("2025-06-01"), Day::MAX)
        ]
    );
    assert!(!s.contains_key("b"), "an episode ending before it starts");
    let f = period_frames(&s, period("2025-01-01", "2025-12-31"));
    assert_eq!(f["a"].days(), 41 + 214);
}

#[test]
fn readmission_day_30_counts_day_31_does_not() {
    let spans = enrollment_spans(&[
        episode("a", "2025-01-01", None),
        episode("b", "2025-01-01", None),
    ]);
    let frames = period_frames(&spans, period("2025-01-01", "2025-03-31"));
    let facts = Facts {
        stays: vec![
            stay(
                "a1",
                "a",
                StayClass::Inpatient,
                "2025-01-05",
                Some("2025-01-10"),
            ),
            stay(
                "a2",
                "a",
                StayClass::Inpatient,
                "2025-02-09",
                Some("2025-02-12"),
            ),
            stay(
                "b1",
                "b",
                StayClass::Inpatient,
                "2025-01-05",
                Some("2025-01-10"),
            ),
            stay(
                "b2",
                "b",
                StayClass::Inpatient,
                "2025-02-10",
                Some("2025-02-12"),
            ),
        ],
        ..Facts::default()
    };
    let r = readmission(&frames, &facts);
    // a1 → a2 on day 30; b1 → b2 on day 31; a2 and b2 themselves are index discharges too.
    assert_eq!(
        r[0].counts,
        Counts {
            initial: 4,
            denominator: 4,
            exclusion: 0,
            numerator: 1
        }
    );
    assert_eq!(r[0].score, Some(0.25));
}

#[test]
fn inpatient_days_census() {
    let spans = enrollment_spans(&[episode("a", "2025-01-03", None)]);
    let frames = period_frames(&spans, period("2025-01-01", "2025-01-31"));
    let facts = Facts {
        stays: vec![
            // 01-01 .. 01-05: days 01-03 and 01-04 are enrolled and counted.
            stay(
                "s1",
                "a",
                StayClass::Inpatient,
                "2025-01-01",
                Some("2025-01-05"),
            ),
            // same-day stay: one day.
            stay(
                "s2",
                "a",
                StayClass::Inpatient,
                "2025-01-10",
                Some("2025-01-10"),
            ),
            // still in hospital: 01-29 .. 01-31.
            stay("s3", "a", StayClass::Inpatient, "2025-01-29", None),
        ],
        ..Facts::default()
    };
    let c = cost(&frames, &facts);
    assert_eq!(c[0].counts.numerator, 2 + 1 + 3);
    assert_eq!(c[0].counts.denominator, 29);
}

#[test]
fn pre_post_frames_per_patient() {
    let eps = vec![
        episode("a", "2025-03-01", None),
        episode("b", "2024-12-01", Some("2025-01-31")),
        episode("b", "2025-05-01", None),
    ];
    let spans = enrollment_spans(&eps);
    let (pre, post) = pre_post_frames(
        &eps,
        &spans,
        period("2025-01-01", "2025-12-31"),
        day("2025-06-30"),
    );
    // b's first enrollment is before the period: not in the cohort.
    assert_eq!(pre.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(pre["a"].days(), 365);
    assert_eq!(pre["a"].window.1, day("2025-02-28"));
    assert_eq!(post["a"].window, (day("2025-03-01"), day("2025-06-30")));
    assert_eq!(post["a"].days(), 122);
}

#[test]
fn report_shape() {
    let c = Counts {
        initial: 3,
        denominator: 3,
        exclusion: 1,
        numerator: 1,
    };
    let g = GroupResult::new(MeasureId::BloodPressure.groups()[0], c, proportion(c));
    let r = measure_report(
        MeasureId::BloodPressure,
        &[g],
        &Subject::Summary,
        (day("2025-01-01"), day("2025-12-31")),
        None,
        "2026-01-01T00:00:00.000Z",
    );
    assert!(!crate::fhir::validate::validate(&r).has_errors(), "{r:#}");
    assert_eq!(r["type"], "summary");
    assert_eq!(r["measure"], "http://icm-fhir.org/fhir/Measure/bp-control");
    assert_eq!(r["group"][0]["measureScore"]["value"], json!(0.5));
    assert_eq!(r["group"][0]["population"][2]["count"], json!(1));
    assert_eq!(score_number(1.0 / 3.0), json!(0.333333));
    assert_eq!(score_number(2.0), json!(2));
    assert_eq!(amount_number(12345), json!(123.45));
    assert_eq!(amount_number(-5), json!(-0.05));
}

#[test]
fn measure_resources_agree_with_the_catalogue() {
    use crate::fhir::validate::profiles::resource;
    let mut group_codes = Vec::new();
    for m in MeasureId::ALL {
        let text = resource("Measure", m.id()).unwrap_or_else(|| panic!("{} not shipped", m.id()));
        let v: Value = serde_json::from_str(text).unwrap();
        let report = crate::fhir::validate::validate(&v);
        assert!(!report.has_errors(), "{}: {:#?}", m.id(), report.issues);
        assert_eq!(v["url"], json!(m.url()));
        assert_eq!(v["id"], json!(m.id()));
        let groups = v["group"].as_array().unwrap();
        assert_eq!(groups.len(), m.groups().len(), "{}", m.id());
        for (g, d) in groups.iter().zip(m.groups()) {
            assert_eq!(g["code"]["coding"][0]["system"], GROUP_SYSTEM);
            assert_eq!(g["code"]["coding"][0]["code"], d.code);
            assert_eq!(g["code"]["coding"][0]["display"], d.display);
            let pops: Vec<&str> = g["population"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["code"]["coding"][0]["code"].as_str().unwrap())
                .collect();
            assert_eq!(
                pops,
                [
                    "initial-population",
                    "denominator",
                    "denominator-exclusion",
                    "numerator"
                ]
            );
            group_codes.push(d.code);
        }
    }
    // Every group code (and the two windows) is in the CodeSystem.
    let cs: Value = serde_json::from_str(resource("CodeSystem", "icm-measure").unwrap()).unwrap();
    assert!(!crate::fhir::validate::validate(&cs).has_errors());
    let concepts: Vec<&str> = cs["concept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    group_codes.extend(["pre", "post"]);
    assert_eq!(concepts, group_codes);
    for id in ["Task-due", "Encounter-discharge-disposition", "Claim-total"] {
        let sp: Value = serde_json::from_str(resource("SearchParameter", id).unwrap()).unwrap();
        let report = crate::fhir::validate::validate(&sp);
        assert!(!report.has_errors(), "{id}: {:#?}", report.issues);
    }
    let ex: Value =
        serde_json::from_str(resource("CodeSystem", "icm-experience").unwrap()).unwrap();
    assert!(!crate::fhir::validate::validate(&ex).has_errors());
}
