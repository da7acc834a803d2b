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
