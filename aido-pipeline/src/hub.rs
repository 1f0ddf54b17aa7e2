//! Models by Hugging Face id (`genbio-ai/AIDO.Cell-3M[@REVISION]`), resolved as
//! `huggingface_hub` resolves them, so a model downloaded by Python is found here and the other
//! way round.
//!
//! - **Cache**: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`,
//!   else `~/.cache/huggingface/hub`; a model lives in `models--ORG--NAME/`, with
//!   `refs/REVISION` holding a commit and `snapshots/COMMIT/FILE` the files (links into
//!   `blobs/`). A 40-hex revision names the snapshot directly.
//! - **Cache first**: when the snapshot of the revision holds a checkpoint (`config.json` and
//!   `model.safetensors` or `pytorch_model.bin`), no request is made. Otherwise the missing files
//!   are downloaded into the same cache through the `hf-hub` client (a blob is written under a
//!   temporary `.part` name and renamed only when its size matches the hub's; a dropped
//!   connection leaves no file a later run would take for complete). To pick up a newer commit
//!   of a branch, pin `@REVISION` or delete `refs/BRANCH`.
//! - **`HF_HUB_OFFLINE`** (`1`, `true`, `yes`, `on`): no request at all; a model absent from the
//!   cache is an error that says so.
//! - **`HF_ENDPOINT`** replaces `https://huggingface.co`; the token is `HF_TOKEN`, else the file
//!   `HF_HOME/token`.

use std::path::{Path, PathBuf};

use hf_hub::api::Progress;
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::Event;
use crate::error::{PipelineError, Result};

/// The files of a checkpoint folder: `config.json` plus one weights file (the first of
/// [`WEIGHTS_FILES`] present), and an optional gene list.
pub const CONFIG_FILE: &str = "config.json";
/// Weights files, in order of preference.
pub const WEIGHTS_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
/// The optional gene list of a checkpoint folder.
pub const GENES_FILE: &str = "genes.tsv";

/// A Hugging Face model id, `ORG/NAME` with an optional `@REVISION` (branch, tag or commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// `ORG/NAME`.
    pub repo: String,
    /// The revision; `None` is `main`.
    pub revision: Option<String>,
}

impl ModelId {
    /// Parses `ORG/NAME[@REVISION]`; `None` when the text does not have that form (letters,
    /// digits, `-`, `_`, `.` in each part, exactly one `/`).
    pub fn parse(s: &str) -> Option<ModelId> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() && !rev.contains(char::is_whitespace) => {
                (r, Some(rev.to_string()))
            }
            Some(_) => return None,
            None => (s, None),
        };
        let (org, name) = repo.split_once('/')?;
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (ok(org) && ok(name)).then(|| ModelId {
            repo: repo.to_string(),
            revision,
        })
    }

    /// The revision asked for (`main` by default).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The model's folder in a cache: `CACHE/models--ORG--NAME`.
    pub fn cache_folder(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.repo.replace('/', "--")))
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.revision {
            Some(r) => write!(f, "{}@{r}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// Where and how models are fetched: the cache, the endpoint, the token, offline mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub cache folder (holding `models--ORG--NAME/`).
    pub cache: PathBuf,
    /// The hub's base URL.
    pub endpoint: String,
    /// The access token, if any.
    pub token: Option<String>,
    /// No network: the cache only.
    pub offline: bool,
}

impl HubSettings {
    /// The settings `huggingface_hub` would use in this process's environment.
    pub fn from_env() -> HubSettings {
        Self::from_vars(|k| std::env::var(k).ok(), std::env::home_dir())
    }

    /// The settings for an environment given as a lookup (`HF_HUB_CACHE`, `HF_HOME`,
    /// `XDG_CACHE_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`) and a home folder.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> HubSettings {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let cache_home = set("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.clone().unwrap_or_default().join(".cache"));
        let hf_home = set("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_home.join("huggingface"));
        let cache = set("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = set("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(hf_home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        HubSettings {
            cache,
            endpoint: set("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".to_string()),
            token,
            offline,
        }
    }
}

/// The snapshot folder of `id` in the cache when it holds a checkpoint, else what is missing.
pub fn cached_snapshot(id: &ModelId, cache: &Path) -> std::result::Result<PathBuf, String> {
    let folder = id.cache_folder(cache);
    if !folder.is_dir() {
        return Err(format!("no folder {}", folder.display()));
    }
    let rev = id.revision();
    let commit = if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        rev.to_string()
    } else {
        let r = folder.join("refs").join(rev);
        std::fs::read_to_string(&r)
            .map_err(|_| format!("no revision '{rev}' (no {})", r.display()))?
            .trim()
            .to_string()
    };
    let snap = folder.join("snapshots").join(&commit);
    if !snap.join(CONFIG_FILE).is_file() {
        return Err(format!("no {CONFIG_FILE} in {}", snap.display()));
    }
    if !WEIGHTS_FILES.iter().any(|w| snap.join(w).is_file()) {
        return Err(format!(
            "no {} in {}",
            WEIGHTS_FILES.join(" or "),
            snap.display()
        ));
    }
    Ok(snap)
}

/// Forwards the client's byte counts as [`Event::Download`] and remembers the total.
struct Reporter<'a> {
    model: String,
    file: String,
    total: usize,
    done: usize,
    on_event: &'a mut dyn FnMut(Event),
}

impl Progress for Reporter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size;
        self.done = 0;
    }
    fn update(&mut self, size: usize) {
        self.done += size;
        (self.on_event)(Event::Download {
            model: self.model.clone(),
            file: self.file.clone(),
            done: self.done as u64,
            total: self.total as u64,
        });
    }
    fn finish(&mut self) {}
}

/// The snapshot folder holding `id`'s checkpoint files: from the cache, or downloaded into it
/// (see the module docs). Download progress reaches `on_event` as [`Event::Download`].
pub fn resolve(
    id: &ModelId,
    settings: &HubSettings,
    on_event: &mut dyn FnMut(Event),
) -> Result<PathBuf> {
    let missing = match cached_snapshot(id, &settings.cache) {
        Ok(snap) => return Ok(snap),
        Err(why) => why,
    };
    if settings.offline {
        return Err(PipelineError::HubOffline {
            id: id.to_string(),
            cache: settings.cache.clone(),
            detail: missing,
        });
    }
    let not_found = |detail: String| PipelineError::HubNotFound {
        id: id.to_string(),
        detail,
        endpoint: settings.endpoint.clone(),
        cache: settings.cache.clone(),
    };
    let download_err = |file: &str, detail: String| PipelineError::HubDownload {
        id: id.to_string(),
        file: file.to_string(),
        detail,
        cache: settings.cache.clone(),
    };
    let api = ApiBuilder::from_cache(Cache::new(settings.cache.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| download_err(CONFIG_FILE, e.to_string()))?;
    let repo = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        id.revision().to_string(),
    ));
    let info = repo.info().map_err(|e| match status_of(&e) {
        Some((401 | 403 | 404, code)) => not_found(describe(code, id)),
        _ => download_err("(repository listing)", e.to_string()),
    })?;
    let listed = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    if !listed(CONFIG_FILE) {
        return Err(not_found(format!(
            "the repository has no {CONFIG_FILE}: not an AIDO.Cell checkpoint"
        )));
    }
    let Some(weights) = WEIGHTS_FILES.iter().find(|w| listed(w)) else {
        return Err(not_found(format!(
            "the repository has no {}: not an AIDO.Cell checkpoint",
            WEIGHTS_FILES.join(" or ")
        )));
    };
    let mut files = vec![CONFIG_FILE, weights];
    if listed(GENES_FILE) {
        files.push(GENES_FILE);
    }
    let mut snapshot = None;
    for file in files {
        let mut reporter = Reporter {
            model: id.to_string(),
            file: file.to_string(),
            total: 0,
            done: 0,
            on_event: &mut *on_event,
        };
        let path = repo
            .download_with_progress(file, &mut reporter)
            .map_err(|e| download_err(file, e.to_string()))?;
        // The client renames a blob into place when its stream ended without an error; check
        // the size it was told as well, so a short file is never left as a complete one.
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if reporter.total > 0 && len != reporter.total as u64 {
            if let Ok(blob) = std::fs::canonicalize(&path) {
                let _ = std::fs::remove_file(blob);
            }
            let _ = std::fs::remove_file(&path);
            return Err(download_err(
                file,
                format!(
                    "{len} of {} bytes arrived; the partial file was removed",
                    reporter.total
                ),
            ));
        }
        snapshot = path.parent().map(Path::to_path_buf);
    }
    // The client has pointed `refs/REVISION` at the commit the files came from.
    snapshot.ok_or_else(|| download_err(CONFIG_FILE, "no file was fetched".into()))
}

impl Progress for &mut Reporter<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        (**self).init(size, filename);
    }
    fn update(&mut self, size: usize) {
        (**self).update(size);
    }
    fn finish(&mut self) {
        (**self).finish();
    }
}

/// The HTTP status and the hub's `X-Error-Code` of a failed request, if it was one.
fn status_of(e: &hf_hub::api::sync::ApiError) -> Option<(u16, Option<String>)> {
    match e {
        hf_hub::api::sync::ApiError::RequestError(err) => match err.as_ref() {
            ureq::Error::Status(code, resp) => {
                Some((*code, resp.header("x-error-code").map(str::to_string)))
            }
            _ => None,
        },
        _ => None,
    }
}

fn describe(code: Option<String>, id: &ModelId) -> String {
    match code.as_deref() {
        Some("RevisionNotFound") => format!("the hub has no revision '{}' of it", id.revision()),
        Some("RepoNotFound") | None => {
            "the hub has no such model (or it is private: set HF_TOKEN)".to_string()
        }
        Some(other) => format!("the hub answered {other}"),
    }
}
