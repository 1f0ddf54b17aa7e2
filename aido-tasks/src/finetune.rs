//! The fine-tuning loop of cell-type annotation (SPEC-tasks §1).
//!
//! - AdamW (β = 0.9/0.999, ε = 1e-8, decoupled weight decay 0.01: PyTorch's `AdamW` defaults)
//!   at a constant learning rate, gradients clipped to a global norm of 1;
//! - each epoch visits the training cells once in an order drawn from `(seed, epoch)`;
//! - after each epoch the validation macro-F1 is computed with the inference-mode model
//!   (batch norm on running statistics, no dropout); the best epoch is kept and training stops
//!   after `patience` epochs without improvement;
//! - a checkpoint (weights, AdamW state, the epoch history) is written after every epoch and a
//!   run resumes from it with the same results as an uninterrupted run;
//! - the frozen part of the backbone is computed once ([`CacheKind`]): with `frozen` the pooled
//!   embeddings, with `last:K` the residual stream entering block `L − K`, so an epoch costs
//!   only the trained blocks and the head.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_model::Pooling;
use aido_train::OptimConfig;
use aido_train::checkpoint::{self, recorder, write_atomic};
use aido_train::finetune::{BestTracker, Observation, Trainable};
use aido_train::optim::{adamw, clip_global_norm};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::record::Recorder;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::cells::TokenizedCells;
use crate::error::{Result, TaskError, io};
use crate::head::CellTypeClassifier;
use crate::split::DataSplit;
use crate::weights::ClassWeights;

/// Settings of a fine-tuning run (everything a resume must match).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// What of the backbone trains: `frozen`, `last:K`, `full`, `lora:R[:ALPHA]`.
    pub trainable: String,
    /// Pooling of the encoder output.
    pub pooling: String,
    /// Hidden width of the head.
    pub head_hidden: usize,
    /// Dropout of the head.
    pub dropout: f64,
    /// Non-affine batch norm in the head.
    pub batch_norm: bool,
    /// Class weights of the loss.
    pub class_weights: ClassWeights,
    /// Maximum epochs.
    pub epochs: usize,
    /// Cells per update.
    pub batch_size: usize,
    /// Learning rate (constant).
    pub lr: f64,
    /// Epochs without a better validation macro-F1 before stopping (0: never stop early).
    pub patience: usize,
    /// Seed of the head's initialization, the epoch order and dropout.
    pub seed: u64,
    /// Compute the frozen part of the backbone once (see [`CacheKind`]).
    pub cache: bool,
}

impl FinetuneConfig {
    /// The trainable part, parsed.
    pub fn trainable(&self) -> Result<Trainable> {
        Ok(self.trainable.parse::<Trainable>()?)
    }

    /// The pooling, parsed.
    pub fn pooling(&self) -> Result<Pooling> {
        self.pooling.parse::<Pooling>().map_err(TaskError::Config)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TaskError::Config(m));
        if self.epochs == 0 {
            return bad("`epochs` must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("`batch_size` must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("`lr` {}: must be a positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("`dropout` {}: must be in [0, 1)", self.dropout));
        }
        if self.head_hidden == 0 {
            return bad("`head_hidden` must be at least 1".into());
        }
        self.trainable()?;
        self.pooling()?;
        Ok(())
    }
}

/// What is computed once before the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheKind {
    /// Nothing: every epoch runs the whole encoder.
    None,
    /// The pooled embeddings `[H]` per cell (`frozen`: only the head trains).
    Pooled,
    /// The residual stream `[S, H]` entering block `start` per cell (`last:K`, start = L − K).
    Hidden {
        /// First trained block.
        start: usize,
    },
}

/// The cache kind a trainable part allows (before the size check).
pub fn cache_kind(trainable: &Trainable, n_layers: usize) -> CacheKind {
    match trainable {
        Trainable::Frozen => CacheKind::Pooled,
        Trainable::LastBlocks(k) if *k < n_layers => CacheKind::Hidden {
            start: n_layers - k,
        },
        _ => CacheKind::None,
    }
}

/// Bytes a cache of `cells` cells takes.
pub fn cache_bytes(kind: CacheKind, cells: usize, seq_len: usize, hidden: usize) -> u64 {
    let per = match kind {
        CacheKind::None => 0,
        CacheKind::Pooled => hidden,
        CacheKind::Hidden { .. } => seq_len * hidden,
    };
    (cells * per * 4) as u64
}

/// The computed cache: one row per cell of `rows` (the `slot` of a data row).
struct Cache {
    /// What is stored.
    kind: CacheKind,
    /// What of the backbone is frozen (what could be stored).
    frozen: CacheKind,
    slot: Vec<usize>,
    width: usize,
    data: Vec<f32>,
}

impl Cache {
    fn rows_of(&self, rows: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.width);
        for &r in rows {
            let s = self.slot[r];
            out.extend_from_slice(&self.data[s * self.width..(s + 1) * self.width]);
        }
        out
    }
}

/// One epoch of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss over the epoch's cells (each update's weighted loss, weighted by
    /// its cells).
    pub train_loss: f64,
    /// Validation macro-F1 after the epoch.
    pub val_macro_f1: f64,
    /// Validation accuracy after the epoch.
    pub val_accuracy: f64,
    /// Wall seconds of the epoch's updates (without validation).
    pub seconds: f64,
}

/// What a checkpoint holds besides weights and optimizer state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunState {
    config: FinetuneConfig,
    classes: Vec<String>,
    split: DataSplit,
    history: Vec<EpochRecord>,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone)]
pub enum Event {
    /// The cache is being computed (`done` of `total` cells).
    Caching {
        /// Cells done.
        done: usize,
        /// Cells to do.
        total: usize,
    },
    /// An update of `epoch` finished.
    Update {
        /// Epoch (1-based).
        epoch: usize,
        /// Cells of the epoch done.
        done: usize,
        /// Training cells.
        total: usize,
        /// The update's loss.
        loss: f64,
    },
    /// An epoch finished.
    Epoch(EpochRecord),
    /// Resumed after `epoch` epochs.
    Resumed {
        /// Epochs already done.
        epoch: usize,
    },
}

/// The inputs of a run.
pub struct FinetuneJob<'a> {
    /// Run folder (checkpoints go to `out/checkpoints`).
    pub out: &'a Path,
    /// The tokenized cells (rows).
    pub data: &'a TokenizedCells,
    /// The dataset's presence mask `[S]`.
    pub present: &'a [u8],
    /// Class of every row (index into `classes`).
    pub codes: &'a [u32],
    /// Class names.
    pub classes: &'a [String],
    /// Rows of each part.
    pub split: &'a DataSplit,
    /// Settings.
    pub config: &'a FinetuneConfig,
    /// Continue the run in `out` from its latest checkpoint.
    pub resume: bool,
    /// Largest cache allowed (bytes); a larger one falls back to recomputation.
    pub cache_limit: u64,
}

/// What a run produced.
pub struct FinetuneOutcome<B: Backend> {
    /// The selected (best validation macro-F1) classifier, inference mode.
    pub best: CellTypeClassifier<B>,
    /// Its epoch (1-based).
    pub best_epoch: usize,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
    /// Weight of every class in the loss.
    pub class_weights: Vec<f64>,
    /// The cache used.
    pub cache: CacheKind,
    /// Bytes of the cache.
    pub cache_bytes: u64,
    /// Seconds spent computing it.
    pub cache_seconds: f64,
    /// Whether the run stopped early.
    pub stopped_early: bool,
}

/// Weighted cross-entropy, PyTorch's weighted mean: `Σ w_{y_i} · (−log p_{i, y_i}) / Σ w_{y_i}`
/// over the batch. `logits [B, C]`, `targets [B]`, `weights [C]` → a scalar `[1]`.
pub fn weighted_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[u32],
    weights: &[f64],
) -> Tensor<B, 1> {
    let [b, _] = logits.dims();
    let device = logits.device();
    let idx: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [b, 1]), &device);
    let picked = log_softmax(logits, 1).gather(1, idx).reshape([b]);
    let w: Vec<f32> = targets
        .iter()
        .map(|&t| weights[t as usize] as f32)
        .collect();
    let total: f64 = targets.iter().map(|&t| weights[t as usize]).sum();
    let w = Tensor::<B, 1>::from_data(TensorData::new(w, [b]), &device);
    (picked * w).sum().neg().div_scalar(total)
}

/// The residual stream entering block `start` of `rows` `[n, S, H]`, computed one cell at a
/// time: a cell's frozen output then does not depend on which cells share its batch (matrix
/// products are not bit-stable across batch compositions), so the cache, the recomputation and
/// any batch order give the same numbers.
fn prefix_rows<B: Backend>(
    model: &CellTypeClassifier<B>,
    rows: &[usize],
    start: usize,
    job: &FinetuneJob<'_>,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    let parts = rows
        .iter()
        .map(|&r| {
            model
                .bert
                .forward_prefix(job.data.tensor(&[r], device), start)
                .map_err(TaskError::from)
        })
        .collect::<Result<Vec<Tensor<B, 3>>>>()?;
    Ok(Tensor::cat(parts, 0))
}

/// The pooled whole-encoder output of `rows` `[n, H]`, one cell at a time (see [`prefix_rows`]).
fn pooled_rows<B: Backend>(
    model: &CellTypeClassifier<B>,
    rows: &[usize],
    job: &FinetuneJob<'_>,
    pooling: Pooling,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let parts = rows
        .iter()
        .map(|&r| {
            let last = model
                .bert
                .forward(job.data.tensor(&[r], device), false)?
                .last_hidden_state;
            aido_model::embed::pool(last, job.present, pooling).map_err(TaskError::from)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(parts, 0))
}

fn logits<B: Backend>(
    model: &CellTypeClassifier<B>,
    rows: &[usize],
    job: &FinetuneJob<'_>,
    cache: &Cache,
    pooling: Pooling,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let b = rows.len();
    match (cache.kind, cache.frozen) {
        (CacheKind::Pooled, _) => Ok(model.head.forward(Tensor::from_data(
            TensorData::new(cache.rows_of(rows), [b, cache.width]),
            device,
        ))),
        (CacheKind::Hidden { start }, _) => {
            let (s, h) = (job.data.seq_len, cache.width / job.data.seq_len);
            let x = Tensor::from_data(TensorData::new(cache.rows_of(rows), [b, s, h]), device);
            model.forward_from_block(x, start, job.present, pooling)
        }
        (CacheKind::None, CacheKind::Pooled) => Ok(model
            .head
            .forward(pooled_rows(model, rows, job, pooling, device)?)),
        (CacheKind::None, CacheKind::Hidden { start }) => model.forward_from_block(
            prefix_rows(model, rows, start, job, device)?,
            start,
            job.present,
            pooling,
        ),
        (CacheKind::None, CacheKind::None) => {
            model.forward(job.data.tensor(rows, device), job.present, pooling)
        }
    }
}

/// Logits of a training batch. Without a stored cache, the frozen part is recomputed on the
/// inner (non-autodiff) backend — the same arithmetic as the cache was built with, so a run
/// with and without the cache gives identical numbers — and only the trained part is
/// recorded for the backward pass.
fn train_logits<B>(
    model: &CellTypeClassifier<B>,
    rows: &[usize],
    job: &FinetuneJob<'_>,
    cache: &Cache,
    pooling: Pooling,
    device: &B::Device,
) -> Result<Tensor<B, 2>>
where
    B: AutodiffBackend,
    B::InnerBackend: Backend,
{
    if cache.kind != CacheKind::None {
        return logits(model, rows, job, cache, pooling, device);
    }
    match cache.frozen {
        CacheKind::None => logits(model, rows, job, cache, pooling, device),
        CacheKind::Pooled => {
            let p = pooled_rows(&model.valid(), rows, job, pooling, device)?;
            Ok(model.head.forward(Tensor::from_inner(p)))
        }
        CacheKind::Hidden { start } => {
            let h = prefix_rows(&model.valid(), rows, start, job, device)?;
            model.forward_from_block(Tensor::from_inner(h), start, job.present, pooling)
        }
    }
}

/// Class predictions (argmax) of `rows`, batch by batch.
fn predict_rows<B: Backend>(
    model: &CellTypeClassifier<B>,
    rows: &[usize],
    job: &FinetuneJob<'_>,
    cache: &Cache,
    pooling: Pooling,
    device: &B::Device,
) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(job.config.batch_size) {
        let l = logits(model, chunk, job, cache, pooling, device)?;
        let v: Vec<f32> = host(l)?;
        out.extend(argmax_rows(&v, job.classes.len()));
    }
    Ok(out)
}

pub(crate) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| TaskError::Config(format!("copying a tensor to the host: {e:?}")))
}

/// Index of the largest value of every row of `[n × c]` (the first on ties).
pub fn argmax_rows(v: &[f32], c: usize) -> Vec<u32> {
    v.chunks_exact(c.max(1))
        .map(|r| {
            let mut best = 0;
            for (j, &x) in r.iter().enumerate() {
                if x > r[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

fn build_cache<B: Backend>(
    model: &CellTypeClassifier<B>,
    kind: CacheKind,
    frozen: CacheKind,
    job: &FinetuneJob<'_>,
    pooling: Pooling,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<Cache> {
    let n = job.data.len();
    let mut rows: Vec<usize> = job
        .split
        .train
        .iter()
        .chain(&job.split.val)
        .copied()
        .collect();
    rows.sort_unstable();
    let mut slot = vec![usize::MAX; n];
    for (s, &r) in rows.iter().enumerate() {
        slot[r] = s;
    }
    let h = model.bert.hidden_size();
    let width = match kind {
        CacheKind::None => 0,
        CacheKind::Pooled => h,
        CacheKind::Hidden { .. } => job.data.seq_len * h,
    };
    let mut data = Vec::new();
    if kind != CacheKind::None {
        data.reserve(rows.len() * width);
        for (i, chunk) in rows.chunks(job.config.batch_size).enumerate() {
            let t: Vec<f32> = match kind {
                CacheKind::Pooled => host(pooled_rows(model, chunk, job, pooling, device)?)?,
                CacheKind::Hidden { start } => {
                    host(prefix_rows(model, chunk, start, job, device)?)?
                }
                CacheKind::None => Vec::new(),
            };
            if t.iter().any(|v| !v.is_finite()) {
                return Err(TaskError::NonFinite {
                    what: "frozen-backbone output".into(),
                    epoch: 0,
                });
            }
            data.extend_from_slice(&t);
            on_event(Event::Caching {
                done: ((i + 1) * job.config.batch_size).min(rows.len()),
                total: rows.len(),
            });
        }
    }
    Ok(Cache {
        kind,
        frozen,
        slot,
        width,
        data,
    })
}

fn macro_f1_codes(truth: &[u32], pred: &[u32], classes: &[String]) -> Result<(f64, f64)> {
    let t: Vec<&str> = truth
        .iter()
        .map(|&c| classes[c as usize].as_str())
        .collect();
    let p: Vec<&str> = pred.iter().map(|&c| classes[c as usize].as_str()).collect();
    let r = aido_eval::metrics::classify::classification_report(&t, &p)?;
    Ok((r.macro_f1, r.accuracy))
}

fn best_dir(out: &Path) -> PathBuf {
    checkpoint::checkpoints_dir(out).join("best")
}

fn save_best<B: AutodiffBackend>(
    out: &Path,
    model: &CellTypeClassifier<B>,
    epoch: usize,
) -> Result<()>
where
    CellTypeClassifier<B>: AutodiffModule<B>,
{
    let dir = best_dir(out);
    let partial = dir.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    let p = partial.join("model");
    recorder()
        .record(model.clone().into_record(), p.clone())
        .map_err(|e| TaskError::Checkpoint {
            path: p.with_extension("mpk"),
            detail: e.to_string(),
        })?;
    write_atomic(&partial.join("epoch"), epoch.to_string().as_bytes())?;
    aido_tokenize::io_util::replace_dir(&partial, &dir).map_err(io(&dir))
}

/// Runs the loop on `model` (the encoder already prepared for `trainable` with
/// [`aido_train::finetune::prepare`], plus a fresh head). Writes checkpoints under
/// `job.out/checkpoints`.
pub fn finetune<B>(
    job: &FinetuneJob<'_>,
    mut model: CellTypeClassifier<B>,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<FinetuneOutcome<B::InnerBackend>>
where
    B: AutodiffBackend,
    B::InnerBackend: Backend,
{
    let cfg = job.config;
    cfg.validate()?;
    let pooling = cfg.pooling()?;
    let trainable = cfg.trainable()?;
    let n_layers = model.bert.encoder.layer.len();
    let mut counts = vec![0usize; job.classes.len()];
    for &r in &job.split.train {
        counts[job.codes[r] as usize] += 1;
    }
    let weights = cfg.class_weights.weights(&counts, job.classes)?;
    let optim_cfg = OptimConfig {
        lr: cfg.lr,
        beta2: 0.999,
        ..OptimConfig::default()
    };
    let mut optim = adamw::<B, CellTypeClassifier<B>>(&optim_cfg);
    let mut state = RunState {
        config: cfg.clone(),
        classes: job.classes.to_vec(),
        split: job.split.clone(),
        history: Vec::new(),
    };
    // The best model is kept as an inference-mode copy: `valid()` copies the batch norm's
    // running statistics, which clones of the training model would share (and keep updating).
    let mut best: Option<(usize, CellTypeClassifier<B::InnerBackend>)> = None;
    if job.resume {
        let dir = checkpoint::latest(job.out)?.ok_or_else(|| TaskError::Checkpoint {
            path: checkpoint::checkpoints_dir(job.out),
            detail: "`resume`: no checkpoint to resume from".into(),
        })?;
        let saved: RunState = checkpoint::read_state_as(&dir)?;
        // more (or fewer) epochs may be asked on resume; everything else must match
        let same = FinetuneConfig {
            epochs: cfg.epochs,
            ..saved.config.clone()
        } == state.config;
        if !same || saved.classes != state.classes || saved.split != state.split {
            return Err(TaskError::Checkpoint {
                path: dir,
                detail: format!(
                    "the run was started with other settings, classes or split; resume with the same flags and data (saved: {})",
                    serde_json::to_string(&saved.config).unwrap_or_default()
                ),
            });
        }
        model = checkpoint::load_model(&dir, model, device)?;
        optim = checkpoint::load_optim(&dir, optim, device)?;
        state.history = saved.history;
        let bd = best_dir(job.out);
        let epoch: usize = fs::read_to_string(bd.join("epoch"))
            .map_err(io(&bd))?
            .trim()
            .parse()
            .map_err(|_| TaskError::Checkpoint {
                path: bd.join("epoch"),
                detail: "not an epoch number".into(),
            })?;
        let rec = recorder()
            .load(bd.join("model"), device)
            .map_err(|e| TaskError::Checkpoint {
                path: bd.join("model.mpk"),
                detail: e.to_string(),
            })?;
        best = Some((epoch, model.valid().load_record(rec)));
        on_event(Event::Resumed {
            epoch: state.history.len(),
        });
    }
    let mut tracker = BestTracker::new(true, (cfg.patience > 0).then_some(cfg.patience));
    let mut stopped = false;
    for r in &state.history {
        if tracker.observe(r.epoch as u64, r.val_macro_f1) == Observation::Stop {
            stopped = true;
        }
    }
    // the frozen part, once
    let mut kind = if cfg.cache {
        cache_kind(&trainable, n_layers)
    } else {
        CacheKind::None
    };
    let cells = job.split.train.len() + job.split.val.len();
    let h = model.bert.hidden_size();
    let mut bytes = cache_bytes(kind, cells, job.data.seq_len, h);
    if bytes > job.cache_limit {
        kind = CacheKind::None;
        bytes = 0;
    }
    let t_cache = Instant::now();
    let frozen = cache_kind(&trainable, n_layers);
    let build = if stopped || state.history.len() >= cfg.epochs {
        CacheKind::None
    } else {
        kind
    };
    let cache = build_cache(
        &model.valid(),
        build,
        frozen,
        job,
        pooling,
        device,
        on_event,
    )?;
    let cache_seconds = t_cache.elapsed().as_secs_f64();
    let val_truth: Vec<u32> = job.split.val.iter().map(|&r| job.codes[r]).collect();
    let start_epoch = state.history.len() + 1;
    for epoch in start_epoch..=cfg.epochs {
        if stopped {
            break;
        }
        B::seed(
            device,
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
        );
        let mut order = job.split.train.clone();
        order.shuffle(&mut StdRng::seed_from_u64(
            cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let t0 = Instant::now();
        let (mut loss_sum, mut done) = (0.0f64, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let targets: Vec<u32> = chunk.iter().map(|&r| job.codes[r]).collect();
            let l = train_logits(&model, chunk, job, &cache, pooling, device)?;
            let loss = weighted_cross_entropy(l, &targets, &weights);
            let lv: f64 = loss.clone().into_scalar().elem();
            if !lv.is_finite() {
                return Err(TaskError::NonFinite {
                    what: format!("training loss ({lv})"),
                    epoch,
                });
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            let norm = clip_global_norm::<B, _>(&model, &mut grads, optim_cfg.clip_norm);
            if !norm.is_finite() {
                return Err(TaskError::NonFinite {
                    what: format!("gradient norm ({norm})"),
                    epoch,
                });
            }
            model = optim.step(cfg.lr, model, grads);
            loss_sum += lv * chunk.len() as f64;
            done += chunk.len();
            on_event(Event::Update {
                epoch,
                done,
                total: order.len(),
                loss: lv,
            });
        }
        let seconds = t0.elapsed().as_secs_f64();
        let valid = model.valid();
        let pred = predict_rows(&valid, &job.split.val, job, &cache, pooling, device)?;
        let (f1, acc) = macro_f1_codes(&val_truth, &pred, job.classes)?;
        let rec = EpochRecord {
            epoch,
            train_loss: loss_sum / done.max(1) as f64,
            val_macro_f1: f1,
            val_accuracy: acc,
            seconds,
        };
        let obs = tracker.observe(epoch as u64, f1);
        if obs == Observation::Improved {
            save_best(job.out, &model, epoch)?;
            best = Some((epoch, model.valid()));
        }
        state.history.push(rec.clone());
        checkpoint::save_numbered::<B, _, _, _>(job.out, epoch as u64, &model, &optim, &state, 1)?;
        on_event(Event::Epoch(rec));
        if obs == Observation::Stop {
            stopped = true;
        }
    }
    let (best_epoch, best) = best.ok_or_else(|| TaskError::NonFinite {
        what: "validation macro-F1 in every epoch".into(),
        epoch: state.history.len(),
    })?;
    Ok(FinetuneOutcome {
        best,
        best_epoch,
        history: state.history,
        class_weights: weights,
        cache: kind,
        cache_bytes: bytes,
        cache_seconds,
        stopped_early: stopped,
    })
}

/// Logits of `rows` with the cache of `kind` built from `model` (`frozen`: the part of the
/// backbone that is frozen, recomputed when `kind` is [`CacheKind::None`]) — the functions the
/// loop uses; public so tests can compare a cached forward with recomputation.
pub fn logits_with_cache<B: Backend>(
    model: &CellTypeClassifier<B>,
    kind: CacheKind,
    frozen: CacheKind,
    job: &FinetuneJob<'_>,
    rows: &[usize],
    device: &B::Device,
) -> Result<Vec<f32>> {
    let pooling = job.config.pooling()?;
    let cache = build_cache(model, kind, frozen, job, pooling, device, &mut |_| {})?;
    host(logits(model, rows, job, &cache, pooling, device)?)
}
