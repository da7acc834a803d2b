//! Unit tests of the FHIRPath engine: parsing every R4 search expression, paths and choice
//! types, operators, empty propagation, three-valued logic, the date precision rule,
//! quantities, functions, and the environment variables.
use super::*;
use serde_json::json;

fn vals(expr: &str, r: &Value) -> Vec<Value> {
    let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
    evaluate(&e, r)
        .into_iter()
        .map(|n| n.value.into_owned())
        .collect()
}

/// The result of `expr` on `{}`-like input `r`: `Some(b)` for a single boolean, `None` for empty.
fn b(expr: &str, r: &Value) -> Option<bool> {
    match vals(expr, r).as_slice() {
        [] => None,
        [Value::Bool(x)] => Some(*x),
        other => panic!("{expr}: not a boolean: {other:?}"),
    }
}

fn one(expr: &str) -> Value {
    let v = vals(expr, &json!({}));
    assert_eq!(v.len(), 1, "{expr}: {v:?}");
    v[0].clone()
}

#[test]
fn every_r4_search_expression_parses() {
    let v: Value = serde_json::from_str(include_str!(
        "../../../fhir-profiles/r4/search-parameters.json"
    ))
    .unwrap();
    let (mut n, mut rootless) = (0, vec![]);
    for p in v["parameter"].as_array().unwrap() {
        if let Some(e) = p["expression"].as_str() {
            let parsed = parse(e).unwrap_or_else(|err| panic!("{e}: {err}"));
            for b in union_branches(&parsed) {
                if root_type(b).is_none() {
                    rootless.push(e.to_string());
                }
            }
            n += 1;
        }
    }
    assert!(n > 1300, "{n}");
    // The one spec expression written relative to its resource (InsurancePlan-name).
    assert_eq!(rootless, vec!["name | alias", "name | alias"]);
}

#[test]
fn paths_unions_and_roots() {
    let p = json!({"resourceType": "Patient", "name": [{"family": "Ng", "given": ["A", "B"]}, {"family": "Li"}]});
    assert_eq!(
        vals("Patient.name.family", &p),
        vec![json!("Ng"), json!("Li")]
    );
    assert_eq!(
        vals("Patient.name.given | Practitioner.name.given", &p),
        vec![json!("A"), json!("B")]
    );
    assert!(vals("Practitioner.name", &p).is_empty());
    assert_eq!(vals("Resource.resourceType", &p), vec![json!("Patient")]);
    // Union removes duplicates; combine keeps them.
    assert_eq!(vals("name.family | name.family", &p).len(), 2);
    assert_eq!(vals("name.family.combine(name.family)", &p).len(), 4);
    assert_eq!(vals("name[1].family", &p), vec![json!("Li")]);
}

#[test]
fn choice_types_and_as() {
    let o = json!({"resourceType": "Observation", "valueQuantity": {"value": 5.4, "unit": "mg"}, "effectiveDateTime": "2020-01-01"});
    assert_eq!(
        vals("(Observation.value as Quantity).value", &o),
        vec![json!(5.4)]
    );
    assert!(vals("(Observation.value as CodeableConcept)", &o).is_empty());
    assert_eq!(vals("Observation.effective", &o), vec![json!("2020-01-01")]);
    assert_eq!(b("value is Quantity", &o), Some(true));
    assert_eq!(b("effective is dateTime", &o), Some(true));
    assert_eq!(b("effective is Period", &o), Some(false));
    let c = json!({"resourceType": "Condition", "abatementAge": {"value": 40}});
    assert_eq!(vals("Condition.abatement.as(Age)", &c).len(), 1);
    assert!(vals("Condition.abatement.as(Range)", &c).is_empty());
    // linkId is not a choice of `link`.
    let q = json!({"resourceType": "Patient", "linkId": "x"});
    assert!(vals("Patient.link", &q).is_empty());
    // children() knows the type of a choice property.
    assert_eq!(vals("children().ofType(Quantity)", &o).len(), 1);
}

#[test]
fn where_resolve_and_system() {
    let t = json!({"resourceType": "CarePlan", "subject": {"reference": "Patient/1"}, "activity": [{"reference": {"reference": "Group/9"}}]});
    assert_eq!(
        vals("CarePlan.subject.where(resolve() is Patient)", &t),
        vec![json!({"reference": "Patient/1"})]
    );
    assert!(vals("CarePlan.subject.where(resolve() is Group)", &t).is_empty());
    let p = json!({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]});
    assert_eq!(
        vals("Patient.telecom.where(system='email')", &p),
        vec![json!({"system": "email", "value": "a@b"})]
    );
    let d = json!({"resourceType": "Patient", "deceasedBoolean": false});
    assert_eq!(
        vals(
            "Patient.deceased.exists() and Patient.deceased != false",
            &d
        ),
        vec![json!(false)]
    );
    let d2 = json!({"resourceType": "Patient", "deceasedDateTime": "2020"});
    assert_eq!(
        vals(
            "Patient.deceased.exists() and Patient.deceased != false",
            &d2
        ),
        vec![json!(true)]
    );
}

#[test]
fn resolve_finds_contained_resources_and_bundle_entries() {
    let r = json!({"resourceType": "CareTeam", "contained": [{"resourceType": "Practitioner", "id": "p"}],
        "participant": [{"member": {"reference": "#p"}}, {"member": {"reference": "#nope"}}]});
    assert_eq!(
        vals("participant.member.resolve().id", &r),
        vec![json!("p")]
    );
    assert_eq!(
        b(
            "participant[0].member.resolve().iif(empty(), true, ofType(Practitioner).exists())",
            &r
        ),
        Some(true)
    );
    assert_eq!(
        b(
            "participant[1].member.resolve().iif(empty(), true, ofType(Practitioner).exists())",
            &r
        ),
        Some(true)
    );
    let patient = json!({"resourceType": "Patient", "id": "1", "generalPractitioner": [{"reference": "Practitioner/9"}]});
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://x.org/fhir/Patient/1", "resource": patient.clone()},
        {"fullUrl": "http://x.org/fhir/Practitioner/9", "resource": {"resourceType": "Practitioner", "id": "9", "active": true}}]});
    let env = Env {
        resource: &bundle["entry"][0]["resource"],
        root: &bundle["entry"][0]["resource"],
        context: None,
        bundle: Some(&bundle),
    };
    let e = parse("generalPractitioner.resolve().active").unwrap();
    let got = eval_in(&e, &env, &[Node::borrowed(env.resource, None)]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_ref(), &json!(true));
}

#[test]
fn three_valued_logic() {
    let r = json!({"a": true, "f": false});
    let cases: &[(&str, Option<bool>)] = &[
        ("a and f", Some(false)),
        ("a and x", None),
        ("f and x", Some(false)),
        ("a or x", Some(true)),
        ("f or x", None),
        ("f or f", Some(false)),
        ("a xor f", Some(true)),
        ("a xor x", None),
        ("f implies x", Some(true)),
        ("a implies x", None),
        ("x implies a", Some(true)),
        ("x implies f", None),
        ("a implies f", Some(false)),
        ("x.not()", None),
        ("f.not()", Some(true)),
        ("(x = 1)", None),
        ("(x != 1)", None),
        ("x.empty()", Some(true)),
        ("x.exists()", Some(false)),
    ];
    for (e, want) in cases {
        assert_eq!(b(e, &r), *want, "{e}");
    }
}

#[test]
fn operators_and_arithmetic() {
    assert_eq!(one("1 + 2 * 3"), json!(7));
    assert_eq!(one("(1 + 2) * 3"), json!(9));
    assert_eq!(one("7 div 2"), json!(3));
    assert_eq!(one("7 mod 2"), json!(1));
    assert_eq!(one("7 / 2").as_f64(), Some(3.5));
    assert_eq!(one("-3 + 1"), json!(-2));
    assert_eq!(one("'a' + 'b'"), json!("ab"));
    assert_eq!(one("'a' & {} & 'c'"), json!("ac"));
    assert!(vals("'a' + {}", &json!({})).is_empty());
    assert!(vals("1 + {}", &json!({})).is_empty());
    assert_eq!(one("1 = 1.0"), json!(true));
    assert_eq!(one("'a' != 'b'"), json!(true));
    assert_eq!(one("'Abc  d' ~ 'abc d'"), json!(true));
    assert_eq!(one("'abc' !~ 'abd'"), json!(true));
    assert_eq!(one("{} ~ {}"), json!(true));
    assert_eq!(one("2 > 1.5"), json!(true));
    assert_eq!(one("'b' >= 'a'"), json!(true));
    assert_eq!(one("'b' in ('a' | 'b')"), json!(true));
    assert_eq!(one("('a' | 'b') contains 'c'"), json!(false));
    assert!(vals("{} in ('a' | 'b')", &json!({})).is_empty());
    assert_eq!(one("(1 | 2 | 1).count()"), json!(2));
    assert_eq!(one("(1 | 2) = (1 | 2)"), json!(true));
    assert_eq!(one("(1 | 2) = (2 | 1)"), json!(false));
    // A comparison of several items is an error, answered as empty.
    assert!(vals("(1 | 2) > 0", &json!({})).is_empty());
    // Operator precedence: `implies` lowest, `=` below `+`, `|` above `=`.
    assert_eq!(one("1 + 1 = 2 and 2 > 1"), json!(true));
}

#[test]
fn dates_compare_by_precision() {
    let cmp = |a: &str, op: &str, c: &str| {
        let r = json!({"a": a, "c": c});
        b(&format!("a {op} c"), &r)
    };
    assert_eq!(cmp("2024-01-01", "<", "2024-01-02"), Some(true));
    assert_eq!(cmp("2024-01", "<", "2024-02-15"), Some(true));
    assert_eq!(cmp("2024-01", "<", "2024-01-15"), None);
    assert_eq!(cmp("2024-01-01", "<=", "2024-01-01T00:00:00Z"), None);
    assert_eq!(cmp("2024-01-01", "<=", "2024-01-01"), Some(true));
    // Element values of unknown type are text for `=` (ordering operators see dates).
    assert_eq!(
        cmp("2024-01-01T10:00:00+01:00", "=", "2024-01-01T09:00:00Z"),
        Some(false)
    );
    assert_eq!(
        cmp("2024-01-01T10:00:00+01:00", "<=", "2024-01-01T09:00:00Z"),
        Some(true)
    );
    assert_eq!(
        cmp("2024-01-01T10:00:00.000Z", ">=", "2024-01-01T10:00:00Z"),
        Some(true)
    );
    assert_eq!(
        cmp("2024-01-01T10:00:00Z", "<", "2024-01-01T10:00:01Z"),
        Some(true)
    );
    assert_eq!(cmp("10:00:00", "<", "11:00"), Some(true));
    assert_eq!(cmp("10:00", "<", "10:00:30"), None);
    assert!(vals("@2024-01-01 = @2024-01-01T10:00:00Z", &json!({})).is_empty());
    assert_eq!(
        one("@2024-01-01T10:00:00+01:00 = @2024-01-01T09:00:00Z"),
        json!(true)
    );
}

#[test]
fn quantities_compare_in_the_same_unit() {
    let r = |lo: Value, hi: Value| json!({"low": lo, "high": hi});
    let mg = |v: f64| json!({"value": v, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"});
    assert_eq!(b("low <= high", &r(mg(1.0), mg(2.0))), Some(true));
    assert_eq!(b("low <= high", &r(mg(3.0), mg(2.0))), Some(false));
    let g = json!({"value": 1, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"});
    assert_eq!(b("low <= high", &r(mg(3.0), g)), None);
    assert_eq!(
        b("low <= high", &r(json!({"value": 1}), json!({"value": 2}))),
        Some(true)
    );
    assert_eq!(
        b(
            "low <= high",
            &r(
                json!({"value": 1, "unit": "mg"}),
                json!({"value": 2, "unit": "mg"})
            )
        ),
        Some(true)
    );
    assert_eq!(b("low.value > 0", &r(mg(1.0), mg(2.0))), Some(true));
    assert_eq!(one("5 'mg' < 6 'mg'"), json!(true));
    assert_eq!(one("(5 'mg' + 6 'mg').value").as_f64(), Some(11.0));
}

#[test]
fn functions() {
    let r: Value = serde_json::from_str(
        r#"{"s": "Hello World", "n": [1, 2, 3], "e": [{"k": "a"}, {"k": "b"}, {"k": "a"}], "max": "5", "d": 1.50}"#,
    )
    .unwrap();
    let cases: &[(&str, Value)] = &[
        ("s.length()", json!(11)),
        ("s.substring(6)", json!("World")),
        ("s.substring(0, 5)", json!("Hello")),
        ("s.indexOf('o')", json!(4)),
        ("s.startsWith('He')", json!(true)),
        ("s.endsWith('d')", json!(true)),
        ("s.contains('lo W')", json!(true)),
        ("s.upper()", json!("HELLO WORLD")),
        ("s.lower()", json!("hello world")),
        ("s.replace('World', 'There')", json!("Hello There")),
        ("s.matches('^H.*d$')", json!(true)),
        ("s.matches('x')", json!(false)),
        ("s.replaceMatches('o', '0')", json!("Hell0 W0rld")),
        ("max.toInteger() + 1", json!(6)),
        ("n.count()", json!(3)),
        ("n.first()", json!(1)),
        ("n.last()", json!(3)),
        ("n.tail().count()", json!(2)),
        ("n.skip(1).first()", json!(2)),
        ("n.take(2).last()", json!(2)),
        ("n.where($this > 1).count()", json!(2)),
        ("n.select($this * 2).last()", json!(6)),
        ("n.where($index = 1)", json!(2)),
        ("n.all($this > 0)", json!(true)),
        ("n.exists($this > 2)", json!(true)),
        ("n.isDistinct()", json!(true)),
        ("e.k.isDistinct()", json!(false)),
        ("e.k.distinct().count()", json!(2)),
        ("e.distinct().count()", json!(2)),
        ("n.intersect(2 | 3 | 4).count()", json!(2)),
        ("n.exclude(2).count()", json!(2)),
        ("(1 | 2).subsetOf(n)", json!(true)),
        ("n.supersetOf(4)", json!(false)),
        ("iif(n.count() > 2, 'many', 'few')", json!("many")),
        ("iif({}, 'y', 'n')", json!("n")),
        ("d.toString()", json!("1.50")),
        ("d.toString().contains('.')", json!(true)),
        ("n.first().toString()", json!("1")),
        ("true.toString()", json!("true")),
        ("'1'.toInteger()", json!(1)),
        ("'x'.convertsToInteger()", json!(false)),
        ("(true | false).allTrue()", json!(false)),
        ("(false | false).allFalse()", json!(true)),
        ("(true | false).anyTrue()", json!(true)),
        ("e.single().exists()", json!(false)),
        ("s.trace('s')", json!("Hello World")),
        ("(-1.5).abs()", json!(1.5)),
        ("1.5.floor()", json!(1)),
        ("e.children().count()", json!(3)),
        ("descendants().k.count()", json!(3)),
        ("%ucum", json!("http://unitsofmeasure.org")),
        ("s.hasValue()", json!(true)),
        ("e.first().hasValue()", json!(false)),
        ("now() > @2020-01-01T00:00:00Z", json!(true)),
        ("today() > @2020-01-01", json!(true)),
    ];
    for (e, want) in cases {
        let got = vals(e, &r);
        assert_eq!(got.len(), 1, "{e}: {got:?}");
        let ok = match (&got[0], want) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (x, y) => x == y,
        };
        assert!(ok, "{e}: got {:?}, want {want}", got[0]);
    }
    // String functions on several items, or on none, are empty.
    assert!(vals("n.toString()", &r).is_empty());
    assert!(vals("x.length()", &r).is_empty());
    assert!(vals("s.substring(20)", &r).is_empty());
    assert!(
        vals("s.matches('(')", &r).is_empty(),
        "a bad regex is empty"
    );
}

#[test]
fn environment_variables() {
    let r = json!({"resourceType": "Observation", "id": "o", "code": {"coding": [{"system": "s", "code": "c"}]},
        "component": [{"code": {"coding": [{"system": "s", "code": "c"}]}}, {"code": {"coding": [{"system": "s", "code": "d"}]}}]});
    assert_eq!(
        vals(
            "component.code.where(coding.intersect(%resource.code.coding).exists())",
            &r
        )
        .len(),
        1
    );
    let container = json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "x"}]});
    let env = Env {
        resource: &container["contained"][0],
        root: &container,
        context: None,
        bundle: None,
    };
    let e = parse("%rootResource.contained.id | %resource.id").unwrap();
    assert_eq!(eval_in(&e, &env, &[]).len(), 1);
    let e = parse("%context.id").unwrap();
    let ctx = Env {
        context: Some(&container["contained"][0]),
        ..env
    };
    assert_eq!(eval_in(&e, &ctx, &[]).len(), 1);
}

#[test]
fn parse_errors_are_reported() {
    assert!(parse("a.b(").is_err());
    assert!(parse("a.frobnicate()").is_err());
    assert!(parse("'open").is_err());
    assert!(parse("a = ").is_err());
    assert!(parse("a # b").is_err());
    // Keywords are names after a dot, and backticks quote a name.
    assert!(parse("text.div.exists()").is_ok());
    assert!(parse("`div` div 2").is_ok());
}

#[test]
fn hostile_input_is_an_error_or_empty_never_a_panic() {
    // Deep nesting is refused rather than overflowing the stack.
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&deep).is_err());
    let calls = format!("{}1{}", "a.where(".repeat(5_000), ")".repeat(5_000));
    assert!(parse(&calls).is_err());
    assert!(parse(&"-".repeat(100_000)).is_err());
    // Arithmetic overflow, division by zero, absurd zones: empty.
    for e in [
        "9223372036854775807 + 1",
        "(-9223372036854775807 - 1).abs()",
        "-(-9223372036854775807 - 1)",
        "1 div 0",
        "1 mod 0",
        "1 / 0",
        "@2024-01-01T10:00:00+99999999:00 < @2024-01-01T10:00:00Z",
    ] {
        assert!(vals(e, &json!({})).is_empty(), "{e}");
    }
    let r = json!({"start": "2024-01-01T10:00:00+99:99", "end": "9999-12-31T23:59:59-14:00",
        "s": "é\u{a61f3}x"});
    assert!(vals("start <= end", &r).len() <= 1);
    assert!(vals("s.substring(1, 2)", &r).len() == 1);
}

#[test]
fn escapes_in_strings() {
    assert_eq!(one(r"'a\'b'"), json!("a'b"));
    assert_eq!(one(r"'a\\b'"), json!(r"a\b"));
    assert_eq!(one(r"'\u0041'"), json!("A"));
    // eld-16's pattern, as written in the R4 definitions.
    let r = json!({"sliceName": "a/b-c_d[x]@"});
    assert_eq!(
        b(r"sliceName.matches('^[a-zA-Z0-9\\/\\-_\\[\\]\\@]+$')", &r),
        Some(true)
    );
}
