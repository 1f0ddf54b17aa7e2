//! Fine-tuning machinery used by the downstream heads (SPEC-rda-training §4): what part of the
//! backbone is trained, parameter groups with their own learning rates (see
//! [`crate::optim::GroupedAdamW`]), and best-checkpoint selection on a validation metric.

use std::fs;
use std::path::Path;

use aido_model::burn::module::Module;
use aido_model::burn::tensor::backend::{AutodiffBackend, Backend};
use aido_model::lora::{self, LoraConfig};
use aido_model::{AidoCell, AidoCellConfig, AidoCellModel, save_checkpoint};
use serde::Serialize;

use crate::checkpoint::{io, write_atomic};
use crate::{Result, TrainError};

/// Which parameters of the backbone are trained (a task head is always trained).
#[derive(Debug, Clone, PartialEq)]
pub enum Trainable {
    /// Nothing in the backbone: a linear probe / head-only training.
    Frozen,
    /// The last `k` blocks and the final norm; embeddings and earlier blocks are frozen.
    LastBlocks(usize),
    /// Everything.
    Full,
    /// A frozen backbone with LoRA adapters on q/k/v/out of every block (the adapters train).
    Lora(LoraConfig),
}

impl std::str::FromStr for Trainable {
    type Err = TrainError;
    /// `frozen`, `full`, `last:K`, `lora:R` (α = 2R) or `lora:R:ALPHA`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TrainError::Config(format!(
                "trainable part '{s}': expected frozen, full, last:K, lora:R or lora:R:ALPHA"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["frozen"] => Ok(Trainable::Frozen),
            ["full"] => Ok(Trainable::Full),
            ["last", k] => Ok(Trainable::LastBlocks(k.parse().map_err(|_| bad())?)),
            ["lora", r] => {
                let r: usize = r.parse().map_err(|_| bad())?;
                Ok(Trainable::Lora(
                    LoraConfig::new().with_rank(r).with_alpha(2.0 * r as f64),
                ))
            }
            ["lora", r, a] => Ok(Trainable::Lora(
                LoraConfig::new()
                    .with_rank(r.parse().map_err(|_| bad())?)
                    .with_alpha(a.parse().map_err(|_| bad())?),
            )),
            _ => Err(bad()),
        }
    }
}

/// Marks the frozen parameters of `backbone` (no gradients, so no optimizer updates) and, for
/// [`Trainable::Lora`], adds the adapters.
pub fn prepare<B: AutodiffBackend>(
    mut backbone: AidoCellModel<B>,
    trainable: &Trainable,
    device: &B::Device,
) -> Result<AidoCellModel<B>> {
    match trainable {
        Trainable::Full => Ok(backbone),
        Trainable::Frozen => Ok(backbone.no_grad()),
        Trainable::LastBlocks(k) => {
            let n = backbone.encoder.layer.len();
            if *k == 0 || *k > n {
                return Err(TrainError::Config(format!(
                    "last:{k}: the model has {n} blocks (use 1..={n}, or frozen)"
                )));
            }
            backbone.gene_embedding = backbone.gene_embedding.no_grad();
            backbone.position_embedding = backbone.position_embedding.no_grad();
            backbone.encoder.layer = backbone
                .encoder
                .layer
                .into_iter()
                .enumerate()
                .map(|(i, l)| if i < n - k { l.no_grad() } else { l })
                .collect();
            Ok(backbone)
        }
        Trainable::Lora(cfg) => {
            if cfg.rank == 0 || cfg.rank > backbone.hidden_size() {
                return Err(TrainError::Config(format!(
                    "LoRA rank {} for hidden size {}",
                    cfg.rank,
                    backbone.hidden_size()
                )));
            }
            Ok(lora::add(backbone.no_grad(), cfg, device))
        }
    }
}

/// What [`BestTracker::observe`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A new best: save this state as the best checkpoint.
    Improved,
    /// Not better than the best.
    NotImproved,
    /// Not better for `patience` evaluations in a row: stop (early stopping).
    Stop,
}

/// Keeps the best value of a validation metric (e.g. macro-F1, higher is better; or a loss).
#[derive(Debug, Clone, PartialEq)]
pub struct BestTracker {
    higher_is_better: bool,
    patience: Option<usize>,
    best: Option<(u64, f64)>,
    since: usize,
}

impl BestTracker {
    /// `patience`: evaluations without improvement before [`Observation::Stop`] (`None`: never).
    pub fn new(higher_is_better: bool, patience: Option<usize>) -> Self {
        BestTracker {
            higher_is_better,
            patience,
            best: None,
            since: 0,
        }
    }

    /// Records the metric of `step`. A non-finite value never improves.
    pub fn observe(&mut self, step: u64, value: f64) -> Observation {
        let better = value.is_finite()
            && match self.best {
                None => true,
                Some((_, b)) => {
                    if self.higher_is_better {
                        value > b
                    } else {
                        value < b
                    }
                }
            };
        if better {
            self.best = Some((step, value));
            self.since = 0;
            return Observation::Improved;
        }
        self.since += 1;
        match self.patience {
            Some(p) if self.since >= p => Observation::Stop,
            _ => Observation::NotImproved,
        }
    }

    /// `(step, value)` of the best evaluation so far.
    pub fn best(&self) -> Option<(u64, f64)> {
        self.best
    }
}

/// What `best.json` records next to the best weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestRecord<'a> {
    /// The update that was best.
    pub step: u64,
    /// The metric's name (e.g. `macro_f1`).
    pub metric: &'a str,
    /// Its value.
    pub value: f64,
}

/// Writes `model` as the best checkpoint into `dir`: `config.json` + `model.safetensors` (the
/// released layout, loadable by `aido embed --model DIR`) and `best.json`. LoRA adapters are
/// merged into a copy of the weights first. The files are written into `DIR.partial/`, which
/// then replaces `dir` (the old best is moved aside and removed only after the rename).
pub fn save_best<B: Backend>(
    dir: &Path,
    model: &AidoCell<B>,
    cfg: &AidoCellConfig,
    record: &BestRecord<'_>,
) -> Result<()> {
    let mut plain = model.clone();
    if lora::has_adapters(&plain.bert) {
        plain.bert = lora::merge(plain.bert);
    }
    let name = dir
        .file_name()
        .ok_or_else(|| TrainError::Config(format!("{}: not a folder name", dir.display())))?
        .to_string_lossy()
        .to_string();
    let partial = dir.with_file_name(format!("{name}.partial"));
    let old = dir.with_file_name(format!("{name}.old"));
    for p in [&partial, &old] {
        if p.exists() {
            fs::remove_dir_all(p).map_err(io(p))?;
        }
    }
    save_checkpoint(&plain, cfg, &partial)?;
    let json = serde_json::to_vec_pretty(record).map_err(|e| TrainError::Checkpoint {
        path: partial.join("best.json"),
        detail: e.to_string(),
    })?;
    write_atomic(&partial.join("best.json"), &json)?;
    if dir.exists() {
        fs::rename(dir, &old).map_err(io(dir))?;
    }
    fs::rename(&partial, dir).map_err(io(dir))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}
