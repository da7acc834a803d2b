//! The shape of the code, guarded: reads `src/` and fails when a lower layer imports a higher
//! one, or when a `thread_local!` appears (request context travels as an explicit value).
//! The layers and their rules are written down in ARCHITECTURE.md.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules a module (a folder under src/ or a file src/NAME.rs) must not import.
const RULES: &[(&str, &[&str])] = &[
    ("store", &["care", "http", "service", "import"]),
    ("care", &["store", "http", "service", "import"]),
    ("fhir", &["store", "care", "http", "service", "import"]),
    ("error", &["store", "care", "http", "service", "import"]),
    ("config", &["store", "care", "http", "service", "import"]),
    ("service", &["http", "import"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under src/ belongs to (`src/store/search/mod.rs` → `store`).
fn layer_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module a piece of source names through `crate::` (plain paths and
/// `crate::{a, b::c}` groups), comments left out.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The violations in one file of layer `layer`.
fn violations(layer: &str, text: &str) -> Vec<String> {
    let mut v = Vec::new();
    if let Some((_, forbidden)) = RULES.iter().find(|(l, _)| *l == layer) {
        for m in crate_imports(text) {
            if forbidden.contains(&m.as_str()) {
                v.push(format!("{layer} imports {m}"));
            }
        }
    }
    if text.contains(&["thread", "_local!"].concat()) {
        v.push("thread-local state (pass the request context explicitly)".into());
    }
    v
}

#[test]
fn layers_import_only_downwards_and_no_thread_locals() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "src/ not found: {}", src.display());
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for v in violations(&layer_of(&src, f), &text) {
            found.push(format!("{}: {v}", f.strip_prefix(&src).unwrap().display()));
        }
    }
    assert!(
        found.is_empty(),
        "layer rules broken:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_violations() {
    assert_eq!(
        violations("store", "use crate::care::task;\nfn f() {}"),
        vec!["store imports care"]
    );
    assert_eq!(
        violations("fhir", "use crate::{error::ApiError, http::negotiate};"),
        vec!["fhir imports http"]
    );
    assert_eq!(
        violations("error", "let x = crate::http::negotiate::FHIR_JSON;"),
        vec!["error imports http"]
    );
    assert!(violations("store", "// crate::care in a comment\nuse crate::fhir;").is_empty());
    assert!(violations("http", "use crate::service::context;").is_empty());
    let tl = ["thread", "_local! { static X: u8 = 0; }"].concat();
    assert_eq!(violations("http", &tl).len(), 1);
}

/// Diesel keys a migration by the part of its folder name before the first `_`: two folders
/// with the same version would make one of them silently never run.
#[test]
fn migration_versions_are_unique() {
    for backend in ["postgres", "sqlite"] {
        let mut seen = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(format!("migrations/{backend}")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let version = name.split('_').next().unwrap().to_string();
            if let Some(other) = seen.insert(version.clone(), name.clone()) {
                panic!("migrations/{backend}: {name} and {other} share version {version}");
            }
        }
        assert!(seen.len() > 5);
    }
}
