//! Small file helpers shared by the writers: nothing half-written ever appears under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};

/// A temporary sibling of `path` (same folder, so the final rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
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
pub fn write_atomically(
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
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |w| w.write_all(bytes))
}

/// Puts the folder `staged` (written completely beside `dir`) in place of `dir`, the one rule
/// every writer of an output folder follows (classifiers, perturbation models, best-epoch
/// checkpoints): the old folder is never removed before the new one is in place.
///
/// On Linux the two folders are swapped in one step (`renameat2` with `RENAME_EXCHANGE`), so
/// `dir` always exists; the old contents are then removed. Where the exchange is not available
/// (another OS, or a file system without it) the old folder is moved aside to a hidden sibling,
/// the new one renamed in, and only then is the old one removed; if the second rename fails the
/// old folder is moved back. An interruption therefore leaves either the old or the new folder
/// under `dir` (plus, at worst, a hidden `.NAME.old-PID` sibling), never nothing.
pub fn replace_dir(staged: &Path, dir: &Path) -> std::io::Result<()> {
    if !staged.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("the staged folder {} does not exist", staged.display()),
        ));
    }
    if !dir.exists() {
        return std::fs::rename(staged, dir);
    }
    if exchange(staged, dir)? {
        // `staged` now holds the old contents.
        return std::fs::remove_dir_all(staged);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = dir.with_file_name(format!(".{name}.old-{}", std::process::id()));
    if aside.exists() {
        std::fs::remove_dir_all(&aside)?;
    }
    std::fs::rename(dir, &aside)?;
    if let Err(e) = std::fs::rename(staged, dir) {
        let _ = std::fs::rename(&aside, dir);
        return Err(e);
    }
    std::fs::remove_dir_all(&aside)
}

/// Swaps two existing paths atomically; `Ok(false)` where the OS or file system cannot.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call;
    // AT_FDCWD resolves relative paths against the working directory, as std's rename does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}
