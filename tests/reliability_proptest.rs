//! Property tests (issue 17) for the search-parameter parser, the date-range logic behind date
//! searches, and the one reference parser: any input parses without a panic, and generated
//! valid input parses to what it says.
use icm_fhir::fhir::reference::Reference;
use icm_fhir::fhir::search::query::{Filter, Prefix, SearchQuery, SearchValue};
use proptest::prelude::*;

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn type_name() -> impl Strategy<Value = String> {
    "[A-Z][A-Za-z0-9]{0,30}"
}

fn fhir_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9\\-\\.]{1,64}"
}

/// The one filter of a parsed single-parameter query, with no issues.
fn single(q: &SearchQuery) -> &[SearchValue] {
    assert!(q.issues.is_empty(), "issues: {:?}", q.issues);
    assert!(q.invalid.is_empty(), "invalid: {:?}", q.invalid);
    assert_eq!(q.filters.len(), 1, "{:?}", q.filters);
    match &q.filters[0] {
        Filter::Param { values, .. } => values,
        other => panic!("not a parameter filter: {other:?}"),
    }
}

fn date_range(q: &str) -> (i64, i64) {
    let q = SearchQuery::parse("Patient", q).unwrap();
    match single(&q) {
        [SearchValue::Date { low, high, .. }] => (*low, *high),
        other => panic!("{other:?}"),
    }
}

fn prefix() -> impl Strategy<Value = (&'static str, Prefix)> {
    prop_oneof![
        Just(("", Prefix::Eq)),
        Just(("eq", Prefix::Eq)),
        Just(("ne", Prefix::Ne)),
        Just(("gt", Prefix::Gt)),
        Just(("lt", Prefix::Lt)),
        Just(("ge", Prefix::Ge)),
        Just(("le", Prefix::Le)),
        Just(("sa", Prefix::Sa)),
        Just(("eb", Prefix::Eb)),
        Just(("ap", Prefix::Ap)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any string classifies without a panic; a local reference is exactly `Type/id` or
    /// `Type/id/_history/v`, rebuilt byte for byte from its parts.
    #[test]
    fn any_reference_string_classifies(s in "\\PC{0,80}") {
        let r = Reference::parse(&s);
        if let Reference::Local { ty, id, version } = r {
            prop_assert!(!s.contains(':') && !s.contains('?') && !s.starts_with('#'));
            let rebuilt = match version {
                Some(v) => format!("{ty}/{id}/_history/{v}"),
                None => format!("{ty}/{id}"),
            };
            prop_assert_eq!(rebuilt, s.clone());
            prop_assert_eq!(r.local(), Some((ty, id)));
            prop_assert_eq!(r.target_type(), Some(ty));
        } else {
            prop_assert_eq!(r.local(), None);
        }
    }

    /// Relative references in every valid shape are local, with their parts.
    #[test]
    fn relative_references_are_local(ty in type_name(), id in fhir_id(), v in proptest::option::of("[0-9]{1,6}")) {
        let s = match &v {
            Some(v) => format!("{ty}/{id}/_history/{v}"),
            None => format!("{ty}/{id}"),
        };
        prop_assert_eq!(
            Reference::parse(&s),
            Reference::Local { ty: &ty, id: &id, version: v.as_deref() }
        );
    }

    /// An absolute URL is never taken for a local resource, whatever its tail; its type is
    /// still known for target checks.
    #[test]
    fn absolute_urls_are_never_local(
        scheme in prop_oneof![Just("http"), Just("https")],
        host in "[a-z]{1,12}\\.[a-z]{2,5}",
        path in "(/[a-z]{1,8}){0,3}",
        ty in type_name(),
        id in fhir_id(),
        hist in proptest::option::of("[0-9]{1,4}"),
    ) {
        let tail = match &hist {
            Some(v) => format!("{ty}/{id}/_history/{v}"),
            None => format!("{ty}/{id}"),
        };
        let url = format!("{scheme}://{host}{path}/{tail}");
        let r = Reference::parse(&url);
        prop_assert_eq!(r, Reference::Absolute(&url));
        prop_assert_eq!(r.local(), None);
        prop_assert_eq!(r.target_type(), Some(ty.as_str()));
    }

    #[test]
    fn bundle_and_contained_references(uuid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", c in "[A-Za-z0-9]{0,20}") {
        let u = format!("urn:uuid:{uuid}");
        prop_assert_eq!(Reference::parse(&u), Reference::Urn(&u));
        let h = format!("#{c}");
        prop_assert_eq!(Reference::parse(&h), Reference::Contained(&c));
    }

    /// Any query string parses (bad parameters become issues, never a panic or an error).
    #[test]
    fn any_query_string_parses(
        ty in prop_oneof![Just("Patient"), Just("Observation"), Just("CarePlan"), Just("Task")],
        q in "[a-z_:.|$,=&%0-9A-Z\\-\\\\]{0,120}",
        raw in "\\PC{0,60}",
    ) {
        prop_assert!(SearchQuery::parse(ty, &q).is_ok());
        prop_assert!(SearchQuery::parse(ty, &raw).is_ok());
        let both = format!("{q}&{}", enc(&raw));
        prop_assert!(SearchQuery::parse(ty, &both).is_ok());
    }

    /// Keys of the right shape with hostile values: every parameter type of Observation.
    #[test]
    fn any_value_for_known_parameters_parses(
        key in prop_oneof![
            Just("code"), Just("date"), Just("subject"), Just("value-quantity"), Just("status"),
            Just("code:text"), Just("subject:Patient"), Just("value-quantity:missing"),
            Just("component-code-value-quantity"), Just("_lastUpdated"), Just("_id"),
            Just("_count"), Just("_sort"), Just("_include"), Just("_has:Task:focus:status"),
            Just("subject.name"), Just("_text"), Just("_content"),
        ],
        v in "\\PC{0,60}",
    ) {
        let ok = SearchQuery::parse("Observation", &format!("{key}={}", enc(&v))).is_ok();
        prop_assert!(ok);
    }

    /// `system|code` tokens parse to that system and code (commas and `|` escaped by `\`).
    #[test]
    fn tokens_parse_to_system_and_code(sys in "[a-z][a-z0-9:/.]{0,30}", code in "[A-Za-z0-9.\\-]{1,20}") {
        let q = SearchQuery::parse("Patient", &format!("identifier={}", enc(&format!("{sys}|{code}")))).unwrap();
        match single(&q) {
            [SearchValue::Token { system, code: c }] => {
                prop_assert_eq!(system.clone(), Some(Some(sys.clone())));
                prop_assert_eq!(c.clone(), Some(code.clone()));
            }
            other => prop_assert!(false, "{other:?}"),
        }
        // `|code`: explicitly no system; `code`: any system.
        let q = SearchQuery::parse("Patient", &format!("identifier=%7C{}", enc(&code))).unwrap();
        let no_system = matches!(single(&q), [SearchValue::Token { system: Some(None), .. }]);
        prop_assert!(no_system);
        let q = SearchQuery::parse("Patient", &format!("identifier={}", enc(&code))).unwrap();
        let any_system = matches!(single(&q), [SearchValue::Token { system: None, .. }]);
        prop_assert!(any_system);
    }

    /// Date ranges: a partial date covers exactly its more precise dates (a year covers its
    /// days, a day its instants), ranges are non-empty, and later days start later.
    #[test]
    fn date_ranges_nest_by_precision(
        y in 1900i32..2100, m in 1u32..=12, d in 1u32..=27, hh in 0u32..24, mm in 0u32..60,
        (p, pref) in prefix(),
    ) {
        let (yl, yh) = date_range(&format!("birthdate={y}"));
        let (ml, mh) = date_range(&format!("birthdate={y}-{m:02}"));
        let (dl, dh) = date_range(&format!("birthdate={y}-{m:02}-{d:02}"));
        let (tl, th) = date_range(&format!("birthdate={}", enc(&format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:00Z"))));
        prop_assert!(yl < yh && ml < mh && dl < dh && tl < th);
        prop_assert!(yl <= ml && mh <= yh, "month within year");
        prop_assert!(ml <= dl && dh <= mh, "day within month");
        prop_assert!(dl <= tl && th <= dh, "instant within day");
        prop_assert_eq!(dh - dl, 86_400_000_000, "a day is 24 hours (UTC)");
        let (nl, _) = date_range(&format!("birthdate={y}-{m:02}-{:02}", d + 1));
        prop_assert_eq!(nl, dh, "the next day starts where this one ends");
        // The prefix is kept and does not change the range.
        let q = SearchQuery::parse("Patient", &format!("birthdate={p}{y}-{m:02}-{d:02}")).unwrap();
        match single(&q) {
            [SearchValue::Date { prefix, low, high }] => {
                prop_assert_eq!(*prefix, pref);
                prop_assert_eq!((*low, *high), (dl, dh));
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    /// Numbers and quantities: the implied range holds the value, and more significant digits
    /// give a range within the coarser one.
    #[test]
    fn quantity_ranges_follow_precision(int in 0u32..100_000, frac in 0u32..10) {
        let coarse = format!("{int}");
        let fine = format!("{int}.{frac}");
        let range = |v: &str| {
            let q = SearchQuery::parse("Observation", &format!("value-quantity={v}")).unwrap();
            match single(&q) {
                [SearchValue::Quantity { value, low, high, .. }] => (*value, *low, *high),
                other => panic!("{other:?}"),
            }
        };
        let (cv, cl, ch) = range(&coarse);
        let (fv, fl, fh) = range(&fine);
        prop_assert!(cl <= cv && cv < ch);
        prop_assert!(fl <= fv && fv < fh);
        prop_assert!(fh - fl < ch - cl, "more digits, narrower range");
    }

    #[test]
    fn count_parses(n in 0i64..1_000_000) {
        let q = SearchQuery::parse("Patient", &format!("_count={n}")).unwrap();
        prop_assert_eq!(q.count, Some(n));
        prop_assert!(q.issues.is_empty());
    }
}

#[test]
fn unknown_type_is_an_error() {
    assert!(SearchQuery::parse("NoSuchType", "name=x").is_err());
}
