//! Locating the project's shared data (`../shared` beside the repository): real single-cell
//! files, the gene vocabulary and the parity fixtures. Every test that needs them goes through
//! [`shared_dir`], which fails loudly when they are missing instead of letting a test pass.

use std::path::{Path, PathBuf};

/// Environment variable that overrides where `shared/` is.
pub const SHARED_ENV: &str = "AIDO_SHARED_DIR";

/// The `shared/` folder: `$AIDO_SHARED_DIR`, else the first `shared/` (holding `data/DATA.md`)
/// found beside this crate or one of its parent folders.
pub fn shared_dir() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(SHARED_ENV) {
        let p = PathBuf::from(p);
        return if p.join("data").is_dir() {
            Ok(p)
        } else {
            Err(format!("{SHARED_ENV}={} has no data/ folder", p.display()))
        };
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in start.ancestors() {
        let cand = dir.join("shared");
        if cand.join("data").join("DATA.md").is_file() {
            return Ok(cand);
        }
    }
    Err(format!(
        "the shared data folder was not found beside {} or its parents; put the project's shared/ folder beside the repository or set {SHARED_ENV}",
        start.display()
    ))
}

/// A file under `shared/`, checked to exist. Panics with a clear message otherwise
/// (meant for tests: a missing input must fail the test, never skip it).
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
