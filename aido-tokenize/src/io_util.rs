//! Small file helpers shared by the writers: nothing half-written ever appears under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Result, TokenizeError};

/// The temporary files this process has started ([`temp_sibling`]): what
/// [`remove_live_temps`] removes when the process is interrupted.
static LIVE_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary sibling of `path` (same folder, so the final rename is atomic):
/// `.NAME.tmp-PID`. The name is registered for [`remove_live_temps`], and temporaries of the
/// same output left by processes that no longer run (a run killed before it could clean up)
/// are removed first ([`remove_stale_temps`]).
pub fn temp_sibling(path: &Path) -> PathBuf {
    remove_stale_temps(path);
    let tmp = temp_name(path, std::process::id());
    if let Ok(mut live) = LIVE_TEMPS.lock()
        && !live.contains(&tmp)
    {
        live.push(tmp.clone());
    }
    tmp
}

/// `.NAME.tmp-PID` beside `path`.
fn temp_name(path: &Path, pid: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.tmp-{pid}");
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

/// Removes every temporary file this process has started and not yet renamed or removed: for
/// a signal handler (Ctrl-C, SIGTERM) before the process exits, so that an interrupted run
/// leaves nothing behind. Returns how many files it removed.
pub fn remove_live_temps() -> usize {
    let live = match LIVE_TEMPS.lock() {
        Ok(l) => l.clone(),
        Err(e) => e.into_inner().clone(),
    };
    live.iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

/// Removes the temporaries of `path` (`.NAME.tmp-PID` beside it) whose process is gone, on
/// Linux (`/proc/PID` absent); elsewhere, and for a running process, nothing is removed.
/// Returns how many files it removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    if !cfg!(target_os = "linux") {
        return 0;
    }
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let prefix = format!(".{name}.tmp-");
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
        if gone && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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
