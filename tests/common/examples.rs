//! The official R4 examples committed under tests/data/examples, as (Type/file, JSON) in
//! file order: shared by the validator and the OpenAPI schema tests.
use serde_json::Value;

pub fn examples() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples");
    let mut out = Vec::new();
    let mut types: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    types.sort();
    for ty in types {
        let mut files: Vec<_> = std::fs::read_dir(&ty)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = format!(
                "{}/{}",
                ty.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            out.push((name, v));
        }
    }
    out
}
