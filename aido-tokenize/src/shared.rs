//! Locating test data. The tests need only what ships in the repository's `testdata/` folder
//! (small public single-cell files and the parity fixtures from the authors' code, with their
//! sources and licences in `testdata/README.md`): every test finds them through
//! [`testdata_path`], which fails loudly when one is missing instead of letting a test pass.
//!
//! Benchmarks and some examples also use the larger project folder `../shared` beside the
//! repository (anchors, reference scripts): [`shared_path`].

use std::path::{Path, PathBuf};

/// Environment variable that overrides where `testdata/` is.
pub const TESTDATA_ENV: &str = "AIDO_TESTDATA_DIR";

/// Environment variable that overrides where `shared/` is.
pub const SHARED_ENV: &str = "AIDO_SHARED_DIR";

/// The first folder named `name` holding `marker`, beside this crate or one of its parents.
fn find_upwards(name: &str, marker: &[&str]) -> Option<PathBuf> {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start.ancestors().map(|d| d.join(name)).find(|cand| {
        let mut p = cand.clone();
        p.extend(marker);
        p.is_file()
    })
}

/// The repository's `testdata/` folder: `$AIDO_TESTDATA_DIR`, else the first `testdata/`
/// (holding `README.md`) found beside this crate or one of its parent folders.
pub fn testdata_dir() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(TESTDATA_ENV) {
        let p = PathBuf::from(p);
        return if p.join("README.md").is_file() {
            Ok(p)
        } else {
            Err(format!("{TESTDATA_ENV}={} has no README.md", p.display()))
        };
    }
    find_upwards("testdata", &["README.md"]).ok_or_else(|| {
        format!(
            "the testdata/ folder was not found beside {} or its parents (it ships in the repository; set {TESTDATA_ENV} to use another copy)",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// A file or folder under `testdata/`, checked to exist. Panics with a clear message otherwise
/// (meant for tests: a missing input must fail the test, never skip it).
pub fn testdata_path(rel: &str) -> PathBuf {
    let dir = testdata_dir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join(rel);
    assert!(p.exists(), "required test file {} is missing", p.display());
    p
}

/// The project's `shared/` folder (benchmarks, anchors, reference scripts; not needed by the
/// tests): `$AIDO_SHARED_DIR`, else the first `shared/` (holding `data/DATA.md`) found beside
/// this crate or one of its parent folders.
pub fn shared_dir() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(SHARED_ENV) {
        let p = PathBuf::from(p);
        return if p.join("data").is_dir() {
            Ok(p)
        } else {
            Err(format!("{SHARED_ENV}={} has no data/ folder", p.display()))
        };
    }
    find_upwards("shared", &["data", "DATA.md"]).ok_or_else(|| {
        format!(
            "the shared folder was not found beside {} or its parents; put the project's shared/ folder beside the repository or set {SHARED_ENV}",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// A file under `shared/`, checked to exist (benchmarks and examples). Panics with a clear
/// message otherwise.
pub fn shared_path(rel: &str) -> PathBuf {
    let dir = shared_dir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join(rel);
    assert!(
        p.exists(),
        "required shared file {} is missing",
        p.display()
    );
    p
}
