//! The pretraining configuration: model shape, optimizer, schedule, data split, logging and
//! checkpoint cadence, and the RDA objective. Readable from TOML; every field has a default.

use std::path::Path;

use aido_model::AidoCellConfig;
use aido_rda::RdaConfig;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Named model shapes. The released sizes keep their depth/width/heads; the gene count is
/// always the length of the gene list the run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// *ours*: 2 layers, H 64, 4 heads, I 160 — for tests, demos and CPU experiments.
    Tiny,
    /// AIDO.Cell-3M: 6 layers, H 128, 4 heads, I 320.
    #[serde(rename = "3m")]
    M3,
    /// AIDO.Cell-10M: 8 layers, H 256, 8 heads, I 640.
    #[serde(rename = "10m")]
    M10,
    /// AIDO.Cell-100M: 18 layers, H 640, 20 heads, I 1664.
    #[serde(rename = "100m")]
    M100,
}

impl std::str::FromStr for Preset {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tiny" => Ok(Preset::Tiny),
            "3m" => Ok(Preset::M3),
            "10m" => Ok(Preset::M10),
            "100m" => Ok(Preset::M100),
            o => Err(TrainError::Config(format!(
                "unknown preset '{o}' (expected tiny, 3m, 10m or 100m)"
            ))),
        }
    }
}

impl Preset {
    /// `(hidden, layers, heads, intermediate)`.
    pub fn shape(self) -> (usize, usize, usize, usize) {
        let c = match self {
            Preset::Tiny => return (64, 2, 4, 160),
            Preset::M3 => AidoCellConfig::aido_3m(),
            Preset::M10 => AidoCellConfig::aido_10m(),
            Preset::M100 => AidoCellConfig::aido_100m(),
        };
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
        )
    }
}

/// The model to train: a preset, or an explicit shape (explicit fields override the preset's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelShape {
    /// Starting shape (default `tiny`).
    pub preset: Preset,
    /// Hidden size `H`.
    pub hidden: Option<usize>,
    /// Blocks `L`.
    pub layers: Option<usize>,
    /// Attention heads.
    pub heads: Option<usize>,
    /// SwiGLU width `I`.
    pub intermediate: Option<usize>,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            preset: Preset::Tiny,
            hidden: None,
            layers: None,
            heads: None,
            intermediate: None,
        }
    }
}

impl ModelShape {
    /// The model configuration for `n_genes` genes (validated).
    pub fn resolve(&self, n_genes: usize) -> Result<AidoCellConfig> {
        let (h, l, n, i) = self.preset.shape();
        let cfg = AidoCellConfig::new(
            n_genes,
            self.hidden.unwrap_or(h),
            self.layers.unwrap_or(l),
            self.heads.unwrap_or(n),
            self.intermediate.unwrap_or(i),
        );
        cfg.validate()
            .map_err(|e| TrainError::Config(format!("model shape: {e}")))?;
        Ok(cfg)
    }
}

/// AdamW and the learning-rate schedule (SPEC-rda-training §2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate (*paper*: 3e-4 for 100M/650M).
    pub lr: f64,
    /// Learning rate at the end of the cosine (*ours*: 0, "cosine decay to the end").
    pub min_lr: f64,
    /// Fraction of the steps with linear warm-up (*paper*: 0.05).
    pub warmup_fraction: f64,
    /// *paper*: β1 = 0.9.
    pub beta1: f32,
    /// *paper*: β2 = 0.95.
    pub beta2: f32,
    /// *paper*: decoupled weight decay 0.01.
    pub weight_decay: f32,
    /// *paper/PyTorch*: 1e-8, set explicitly (burn's default differs).
    pub eps: f32,
    /// Global-norm gradient clipping threshold (*paper*: 1.0); `0` disables clipping.
    pub clip_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 3e-4,
            min_lr: 0.0,
            warmup_fraction: 0.05,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay: 0.01,
            eps: 1e-8,
            clip_norm: 1.0,
        }
    }
}

/// Everything a pretraining run needs besides its data and output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The model shape.
    pub model: ModelShape,
    /// Optimizer updates.
    pub steps: u64,
    /// Cells per micro-batch (one forward/backward).
    pub batch_size: usize,
    /// Micro-batches per update: the effective batch is `batch_size × grad_accum` cells.
    pub grad_accum: usize,
    /// Optimizer and schedule.
    pub optim: OptimConfig,
    /// Seed of the model initialization, the data order, the split and the RDA examples.
    pub seed: u64,
    /// Fraction of the cells held out for validation.
    pub val_fraction: f64,
    /// At most this many validation cells.
    pub max_val_cells: usize,
    /// Validation every this many updates (and before the first, and at the end).
    pub val_every: u64,
    /// A metrics line every this many updates (validation steps are always logged).
    pub log_every: u64,
    /// A checkpoint every this many updates (and at the end).
    pub checkpoint_every: u64,
    /// Resumable checkpoints kept on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// Data-parallel peers (devices): the `grad_accum` micro-batches of an update are dealt
    /// among them and their gradients summed with burn's collective all-reduce (feature
    /// `collective`). 1 = a single device.
    pub data_parallel: usize,
    /// Recompute activations in the backward pass (burn's balanced checkpointing) to save
    /// memory at full context.
    pub activation_checkpointing: bool,
    /// The RDA objective.
    pub rda: RdaConfig,
    /// Streamed (packed) corpora: training cells shuffled together, the bound on the cells held
    /// in memory (see `aido_train::packed`). Ignored for corpora held in memory.
    pub shuffle_buffer: usize,
    /// Compute precision of the encoder blocks (`aido_model::Precision`): `bf16` is mixed
    /// precision with f32 master weights, f32 AdamW state, f32 norms, softmax statistics and
    /// loss. A backend without bf16 is refused at start.
    pub precision: aido_model::Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelShape::default(),
            steps: 1000,
            batch_size: 8,
            grad_accum: 1,
            optim: OptimConfig::default(),
            seed: 0,
            val_fraction: 0.05,
            max_val_cells: 512,
            val_every: 100,
            log_every: 1,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            data_parallel: 1,
            activation_checkpointing: false,
            rda: RdaConfig::default(),
            shuffle_buffer: 10_000,
            precision: aido_model::Precision::F32,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file (unknown keys are errors, missing keys take their defaults).
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| TrainError::ConfigFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Cells per optimizer update.
    pub fn cells_per_step(&self) -> usize {
        self.batch_size * self.grad_accum
    }

    /// Range checks with messages naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if self.steps == 0 {
            return bad("steps must be ≥ 1");
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be ≥ 1");
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optim.lr must be a positive number");
        }
        if !(o.min_lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr) {
            return bad("optim.min_lr must be in [0, lr]");
        }
        if !(0.0..1.0).contains(&o.warmup_fraction) {
            return bad("optim.warmup_fraction must be in [0, 1)");
        }
        if !((0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2)) {
            return bad("optim.beta1 and optim.beta2 must be in [0, 1)");
        }
        if !(o.eps > 0.0 && o.weight_decay >= 0.0 && o.clip_norm >= 0.0) {
            return bad("optim.eps must be > 0, weight_decay and clip_norm ≥ 0");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("val_fraction must be in [0, 1)");
        }
        if self.val_every == 0 || self.log_every == 0 || self.checkpoint_every == 0 {
            return bad("val_every, log_every and checkpoint_every must be ≥ 1");
        }
        if self.shuffle_buffer == 0 {
            return bad("shuffle_buffer must be ≥ 1");
        }
        if self.data_parallel == 0 || self.grad_accum < self.data_parallel {
            return bad(
                "data_parallel must be ≥ 1 and ≤ grad_accum (each peer takes at least one micro-batch of every update)",
            );
        }
        if self.data_parallel > 1 && !cfg!(feature = "collective") {
            return bad("data_parallel > 1 needs aido-train's `collective` feature");
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints must be ≥ 1");
        }
        self.rda
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(())
    }
}

/// Linear warm-up then cosine decay, in closed form of the update index, so a resumed run needs
/// no scheduler state: the rate of update `step` (1-based) of `total`.
///
/// With `w = round(fraction × total)` warm-up updates, update `k ≤ w` gets `peak · k / w`; the
/// others get `min + (peak − min) · ½(1 + cos(π t))` with `t = (k − 1 − w) / (total − w)`, so the
/// first update after the warm-up runs at the peak and the rate approaches `min` at the end
/// without spending an update at exactly `min`.
pub fn learning_rate(o: &OptimConfig, step: u64, total: u64) -> f64 {
    let total = total.max(1);
    let warmup = ((o.warmup_fraction * total as f64).round() as u64).min(total - 1);
    if step <= warmup {
        return o.lr * step as f64 / warmup.max(1) as f64;
    }
    let t = ((step - 1 - warmup) as f64 / (total - warmup) as f64).clamp(0.0, 1.0);
    o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let o = OptimConfig {
            lr: 1.0,
            min_lr: 0.1,
            ..OptimConfig::default()
        };
        // 100 steps: warm-up 5 updates.
        assert!((learning_rate(&o, 1, 100) - 0.2).abs() < 1e-12);
        assert!((learning_rate(&o, 5, 100) - 1.0).abs() < 1e-12);
        // First cosine update at the peak; update 6 + 95/2 has t = 47.5/95 = ½: (min + peak) / 2.
        assert!((learning_rate(&o, 6, 100) - 1.0).abs() < 1e-12);
        let o2 = OptimConfig {
            warmup_fraction: 0.0,
            ..o
        };
        // No warm-up, 2 updates: t = 0 then ½.
        assert!((learning_rate(&o2, 1, 2) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&o2, 2, 2) - 0.55).abs() < 1e-12);
        // The last update is close to (not at) the minimum: t = 94/95.
        let last = 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 94.0 / 95.0).cos());
        assert!((learning_rate(&o, 100, 100) - last).abs() < 1e-12);
        assert!(learning_rate(&o, 100, 100) > 0.1);
        let mut prev = f64::INFINITY;
        for s in 5..=100 {
            let l = learning_rate(&o, s, 100);
            assert!(l <= prev + 1e-15);
            prev = l;
        }
    }

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let cfg: TrainConfig = toml::from_str(
            "steps = 20\nbatch_size = 4\n[model]\npreset = \"3m\"\nlayers = 2\n[optim]\nlr = 1e-3\n",
        )
        .unwrap();
        assert_eq!(cfg.steps, 20);
        assert_eq!(cfg.model.preset, Preset::M3);
        let m = cfg.model.resolve(100).unwrap();
        assert_eq!(
            (m.hidden_size, m.num_hidden_layers, m.num_attention_heads),
            (128, 2, 4)
        );
        assert_eq!(cfg.optim.beta2, 0.95);
        let err = toml::from_str::<TrainConfig>("stepz = 3\n").unwrap_err();
        assert!(err.to_string().contains("stepz"), "{err}");
    }

    #[test]
    fn the_documented_example_file_is_the_defaults() {
        // docs/pretrain.example.toml lists every field with its default: it must parse (no
        // unknown or misspelled keys) and equal TrainConfig::default().
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pretrain.example.toml");
        let cfg = TrainConfig::from_toml(&path).unwrap();
        assert_eq!(cfg, TrainConfig::default());
    }
}

/// This process' place in a multi-node run (**experimental**, see `aido_train::multinode`): not
/// part of [`TrainConfig`], so a run can be resumed on another layout of nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Nodes (processes) in the run.
    pub nodes: u32,
    /// This node's rank, `0..nodes`.
    pub rank: u32,
    /// `HOST:PORT` of the orchestrator (`aido orchestrator --port PORT`).
    pub orchestrator: String,
    /// `HOST:PORT` the other nodes reach this node at (it listens on PORT, all interfaces).
    pub bind: String,
    /// Deadline of every collective call: a node silent for longer stops the run.
    pub timeout: std::time::Duration,
}

impl NodeConfig {
    /// Range and address checks with messages naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 || self.rank >= self.nodes {
            return Err(TrainError::Config(format!(
                "`node_rank` {} must be in 0..{} (`nodes`)",
                self.rank, self.nodes
            )));
        }
        host_port(&self.orchestrator, "`orchestrator`")?;
        self.bind_port()?;
        if self.timeout.is_zero() {
            return Err(TrainError::Config("`node_timeout` must be > 0".into()));
        }
        Ok(())
    }

    /// The port of `bind`.
    pub fn bind_port(&self) -> Result<u16> {
        host_port(&self.bind, "`bind`")
    }
}

fn host_port(s: &str, flag: &str) -> Result<u16> {
    let bad = || {
        TrainError::Config(format!(
            "{flag} {s:?}: expected HOST:PORT (e.g. 10.0.0.1:29500)"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    port.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)
}
