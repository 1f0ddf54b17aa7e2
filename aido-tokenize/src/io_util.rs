//! Small file helpers shared by the writers: nothing half-written ever appears under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};

/// A temporary sibling of `path` (same folder, so the final rename is atomic).
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

/// Writes through `body` into a temporary sibling file, then renames it onto `path`.
/// On any error the temporary file is removed and `path` is left untouched.
pub(crate) fn write_atomically(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_sibling(path);
    let run = || -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        body(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    };
    if let Err(e) = run() {
        let _ = std::fs::remove_file(&tmp);
        return Err(TokenizeError::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TokenizeError::io(path, e)
    })
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |w| w.write_all(bytes))
}
