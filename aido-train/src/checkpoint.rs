//! Resumable checkpoints, written so that a kill at any moment leaves the last complete one
//! usable.
//!
//! ```text
//! OUT/checkpoints/
//!   latest               name of the newest complete checkpoint (replaced by rename)
//!   step-00000100/
//!     model.mpk          weights with their parameter ids (burn record, full precision)
//!     optim.mpk          AdamW moments and step counts, by parameter id
//!     state.json         step, cells consumed (the data position), seed, config
//! ```
//! A checkpoint is written into `step-N.partial/`, synced, and renamed to `step-N/`; only then
//! does `latest` (written to a temporary name and renamed) point at it. The RDA examples and the
//! data order are functions of `(seed, position)`, so `state.json` holds the whole data-loader
//! and RNG state; the learning rate is a closed form of the step.

use std::fs;
use std::path::{Path, PathBuf};

use aido_model::burn::module::AutodiffModule;
use aido_model::burn::optim::Optimizer;
use aido_model::burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use aido_model::burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::{Result, TrainError};

/// The counters of a run at a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer updates done.
    pub step: u64,
    /// Training cells consumed (the data position in the stream).
    pub cells_seen: u64,
    /// The run's configuration.
    pub config: TrainConfig,
    /// Last validation loss, if any.
    pub val_loss: Option<f64>,
}

/// The recorder used for weights and optimizer state.
pub fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))
}

fn sync_dir(dir: &Path) {
    // Best effort: not every platform can open a folder to sync it.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn step_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint of `model`, `optim` and `state` and makes it the latest; keeps the `keep`
/// newest. Returns its folder.
pub fn save<B, M, O>(
    out: &Path,
    model: &M,
    optim: &O,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    save_numbered::<B, M, O, TrainState>(out, state.step, model, optim, state, keep)
}

/// [`save`] for any run whose counters serialize to `state.json` (fine-tuning saves once per
/// epoch): the checkpoint is `checkpoints/step-{number:08}`.
pub fn save_numbered<B, M, O, S>(
    out: &Path,
    number: u64,
    model: &M,
    optim: &O,
    state: &S,
    keep: usize,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: Serialize,
{
    let root = checkpoints_dir(out);
    fs::create_dir_all(&root).map_err(io(&root))?;
    let name = step_name(number);
    let partial = root.join(format!("{name}.partial"));
    let fin = root.join(&name);
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    let rec = recorder();
    let rec_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: aido_model::burn::record::RecorderError| TrainError::Checkpoint {
            path: p,
            detail: e.to_string(),
        }
    };
    let mp = partial.join("model");
    rec.record(model.clone().into_record(), mp.clone())
        .map_err(rec_err(&mp))?;
    let op = partial.join("optim");
    rec.record(optim.to_record(), op.clone())
        .map_err(rec_err(&op))?;
    let sp = partial.join("state.json");
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
        path: sp.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&sp, &json)?;
    for f in ["model.mpk", "optim.mpk"] {
        let p = partial.join(f);
        fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(io(&p))?;
    }
    sync_dir(&partial);
    if fin.exists() {
        fs::remove_dir_all(&fin).map_err(io(&fin))?;
    }
    fs::rename(&partial, &fin).map_err(io(&fin))?;
    sync_dir(&root);
    write_atomic(&root.join("latest"), name.as_bytes())?;
    sync_dir(&root);
    prune(&root, &name, keep)?;
    Ok(fin)
}

/// Removes all but the `keep` newest complete checkpoints (never `latest`) and stale partials.
fn prune(root: &Path, latest: &str, keep: usize) -> Result<()> {
    let mut steps: Vec<String> = Vec::new();
    for e in fs::read_dir(root).map_err(io(root))? {
        let e = e.map_err(io(root))?;
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("step-") {
            if n.ends_with(".partial") {
                let _ = fs::remove_dir_all(e.path());
            } else {
                steps.push(n);
            }
        }
    }
    steps.sort();
    let n = steps.len();
    for s in steps.into_iter().take(n.saturating_sub(keep)) {
        if s != latest {
            let p = root.join(&s);
            fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// The latest complete checkpoint of `out`, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    let root = checkpoints_dir(out);
    let p = root.join("latest");
    if !p.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&p).map_err(io(&p))?;
    let dir = root.join(name.trim());
    if !dir.join("state.json").exists() {
        return Err(TrainError::Checkpoint {
            path: dir,
            detail: "'latest' names a checkpoint without state.json".into(),
        });
    }
    Ok(Some(dir))
}

/// Reads `state.json` of a checkpoint folder.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    read_state_as(dir)
}

/// Reads `state.json` of a checkpoint folder written by [`save_numbered`].
pub fn read_state_as<S: serde::de::DeserializeOwned>(dir: &Path) -> Result<S> {
    let p = dir.join("state.json");
    let text = fs::read_to_string(&p).map_err(io(&p))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: p,
        detail: e.to_string(),
    })
}

/// Loads the weights (with their parameter ids) of a checkpoint into `model`.
pub fn load_model<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    model: M,
    device: &B::Device,
) -> Result<M> {
    let p = dir.join("model");
    let record = recorder()
        .load::<M::Record>(p.clone(), device)
        .map_err(|e| TrainError::Checkpoint {
            path: p.with_extension("mpk"),
            detail: e.to_string(),
        })?;
    Ok(model.load_record(record))
}

/// Loads the optimizer state of a checkpoint into `optim`.
pub fn load_optim<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    dir: &Path,
    optim: O,
    device: &B::Device,
) -> Result<O> {
    let p = dir.join("optim");
    let record = recorder()
        .load::<O::Record>(p.clone(), device)
        .map_err(|e| TrainError::Checkpoint {
            path: p.with_extension("mpk"),
            detail: e.to_string(),
        })?;
    Ok(optim.load_record(record))
}
