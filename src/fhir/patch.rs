//! JSON Patch (RFC 6902) with JSON Pointer (RFC 6901), applied atomically to a resource body;
//! JSON Merge Patch (RFC 7386); and [`PatchFormat`], the three formats PATCH accepts (FHIRPath
//! Patch is fhir::fhirpatch).
use serde_json::Value;

/// The format of a PATCH body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchFormat {
    /// RFC 6902 (`application/json-patch+json`).
    Json,
    /// RFC 7386 (`application/merge-patch+json`).
    Merge,
    /// FHIRPath Patch: a `Parameters` resource (`application/fhir+json`).
    FhirPath,
}

impl PatchFormat {
    /// Apply a patch of this format to `doc`: all of it or nothing.
    pub fn apply(self, doc: &Value, patch: &Value) -> Result<Value, PatchError> {
        match self {
            PatchFormat::Json => apply(doc, patch),
            PatchFormat::Merge => Ok(merge_patch(doc, patch)),
            PatchFormat::FhirPath => super::fhirpatch::apply(doc, patch),
        }
    }
}

/// Why a patch could not be applied: a malformed patch document (client error, 400) or an
/// operation that fails against this document (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    Malformed(String),
    Failed(String),
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchError::Malformed(m) | PatchError::Failed(m) => f.write_str(m),
        }
    }
}

/// Parse a JSON Pointer into reference tokens.
fn pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("'{p}' is not a JSON Pointer (must start with '/')"));
    };
    rest.split('/')
        .map(|t| {
            if t.contains('~') {
                let mut out = String::new();
                let mut chars = t.chars();
                while let Some(c) = chars.next() {
                    if c == '~' {
                        match chars.next() {
                            Some('0') => out.push('~'),
                            Some('1') => out.push('/'),
                            _ => return Err(format!("'{p}' has a bad '~' escape")),
                        }
                    } else {
                        out.push(c);
                    }
                }
                Ok(out)
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

/// An array index token: digits without leading zeros.
fn index(tok: &str, path: &str) -> Result<usize, String> {
    if tok.is_empty()
        || !tok.bytes().all(|b| b.is_ascii_digit())
        || (tok.len() > 1 && tok.starts_with('0'))
    {
        return Err(format!("'{tok}' in '{path}' is not an array index"));
    }
    tok.parse()
        .map_err(|_| format!("'{tok}' in '{path}' is not an array index"))
}

fn get<'a>(doc: &'a Value, toks: &[String], path: &str) -> Result<&'a Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => a.get(index(t, path)?),
            _ => None,
        }
        .ok_or_else(|| format!("path '{path}' does not exist"))?;
    }
    Ok(cur)
}

fn get_mut<'a>(doc: &'a mut Value, toks: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => {
                let i = index(t, path)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| format!("path '{path}' does not exist"))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, toks: &[String], value: Value, path: &str) -> Result<(), String> {
    let Some((last, parent)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i = index(last, path)?;
            if i > a.len() {
                return Err(format!(
                    "index {i} in '{path}' is past the end of the array"
                ));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("the parent of '{path}' is not an object or array")),
    }
}

fn remove(doc: &mut Value, toks: &[String], path: &str) -> Result<Value, String> {
    let Some((last, parent)) = toks.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match get_mut(doc, parent, path)? {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| format!("path '{path}' does not exist")),
        Value::Array(a) => {
            let i = index(last, path)?;
            if i >= a.len() {
                return Err(format!("path '{path}' does not exist"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path '{path}' does not exist")),
    }
}

/// JSON equality where numbers compare by value (1 == 1.0) and objects ignore member order.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_i64(), y.as_i64()) {
                    (Some(i), Some(j)) => i == j,
                    _ => matches!((x.as_f64(), y.as_f64()), (Some(f), Some(g)) if f == g),
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn field<'a>(op: &'a Value, name: &str, n: usize) -> Result<&'a Value, PatchError> {
    op.get(name)
        .ok_or_else(|| PatchError::Malformed(format!("patch operation {n} has no '{name}'")))
}

fn str_field<'a>(op: &'a Value, name: &str, n: usize) -> Result<&'a str, PatchError> {
    field(op, name, n)?.as_str().ok_or_else(|| {
        PatchError::Malformed(format!("patch operation {n}: '{name}' must be a string"))
    })
}

/// Apply a JSON Patch document to `doc`: all operations or none.
pub fn apply(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        PatchError::Malformed("a JSON Patch document must be a JSON array of operations".into())
    })?;
    let mut out = doc.clone();
    for (n, op) in ops.iter().enumerate() {
        if !op.is_object() {
            return Err(PatchError::Malformed(format!(
                "patch operation {n} is not an object"
            )));
        }
        let name = str_field(op, "op", n)?;
        let path = str_field(op, "path", n)?;
        let toks = pointer(path).map_err(PatchError::Malformed)?;
        let fail = |m: String| PatchError::Failed(format!("patch operation {n} ({name}): {m}"));
        match name {
            "add" => {
                let v = field(op, "value", n)?.clone();
                add(&mut out, &toks, v, path).map_err(fail)?;
            }
            "remove" => {
                remove(&mut out, &toks, path).map_err(fail)?;
            }
            "replace" => {
                let v = field(op, "value", n)?.clone();
                *get_mut(&mut out, &toks, path).map_err(fail)? = v;
            }
            "move" | "copy" => {
                let from = str_field(op, "from", n)?;
                let ftoks = pointer(from).map_err(PatchError::Malformed)?;
                let v = if name == "move" {
                    if toks.len() > ftoks.len() && toks[..ftoks.len()] == ftoks[..] {
                        return Err(fail(format!("cannot move '{from}' into its own child '{path}'")));
                    }
                    remove(&mut out, &ftoks, from).map_err(fail)?
                } else {
                    get(&out, &ftoks, from).map_err(fail)?.clone()
                };
                add(&mut out, &toks, v, path).map_err(fail)?;
            }
            "test" => {
                let want = field(op, "value", n)?;
                let have = get(&out, &toks, path).map_err(fail)?;
                if !json_equal(have, want) {
                    return Err(fail(format!(
                        "test failed: '{path}' is {have}, not {want}"
                    )));
                }
            }
            other => {
                return Err(PatchError::Malformed(format!(
                    "patch operation {n}: unknown op '{other}' (add, remove, replace, move, copy, test)"
                )))
            }
        }
    }
    Ok(out)
}

/// JSON Merge Patch (RFC 7386): objects merge member by member, `null` removes a member, any
/// other value (arrays included) replaces the target's whole.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => serde_json::Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod merge_tests {
    use super::merge_patch;
    use serde_json::json;

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (t, p, want) in cases {
            assert_eq!(merge_patch(&t, &p), want, "{t} + {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every case of the HL7 / RFC 6902 JSON Patch test file.
    #[test]
    fn hl7_json_patch_tests() {
        let cases: Value =
            serde_json::from_str(include_str!("../../tests/data/json-patch-tests.json")).unwrap();
        let cases = cases.as_array().unwrap();
        assert!(cases.len() >= 16);
        for c in cases {
            let name = c["comment"].as_str().unwrap_or("?");
            if c.get("disabled").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let r = apply(&c["doc"], &c["patch"]);
            match (c.get("expected"), c.get("error")) {
                (Some(exp), _) => {
                    let got = r.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert!(json_equal(&got, exp), "{name}: got {got}, want {exp}");
                }
                (None, Some(_)) => assert!(r.is_err(), "{name}: should fail, got {r:?}"),
                _ => panic!("{name}: case has neither expected nor error"),
            }
        }
    }

    #[test]
    fn atomic_and_order_preserving() {
        let doc = json!({"a": 1, "b": 2, "c": 3});
        let r = apply(&doc, &json!([{"op": "remove", "path": "/b"}])).unwrap();
        assert_eq!(r.to_string(), r#"{"a":1,"c":3}"#);
        let r = apply(
            &doc,
            &json!([{"op": "replace", "path": "/a", "value": 9}, {"op": "remove", "path": "/zz"}]),
        );
        assert!(matches!(r, Err(PatchError::Failed(_))));
        assert!(matches!(
            apply(&doc, &json!({"op": "add"})),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            apply(&doc, &json!([{"op": "frob", "path": "/a"}])),
            Err(PatchError::Malformed(_))
        ));
        assert!(apply(&doc, &json!([{"op": "test", "path": "/a", "value": 1.0}])).is_ok());
        assert!(apply(
            &json!({"a": [1]}),
            &json!([{"op": "add", "path": "/a/01", "value": 1}])
        )
        .is_err());
        assert!(apply(
            &json!({"a": {"b": 1}}),
            &json!([{"op": "move", "from": "/a", "path": "/a/c"}])
        )
        .is_err());
    }
}
