//! # aido-train — training AIDO.Cell
//!
//! - [`pretrain`](mod@pretrain): the read-depth-aware pretraining loop (SPEC-rda-training §2–3): AdamW with the
//!   paper's constants, linear warm-up + cosine ([`config::learning_rate`], a closed form of the
//!   step), clipping by the global gradient norm, gradient accumulation, a held-out validation
//!   split, a JSON-lines metrics log, atomic resumable checkpoints ([`checkpoint`]) and an export
//!   in the released checkpoint layout that `aido embed --model` loads.
//! - [`data`]: the in-memory corpus of aligned raw counts, the split and the seeded data order.
//! - [`optim`]: global-norm clipping and AdamW with parameter groups ([`optim::GroupedAdamW`]).
//! - [`baselines`]: trivial predictors scored on the validation examples.
//! - [`finetune`]: what is trainable (frozen backbone, last k blocks, full, LoRA) and
//!   best-checkpoint selection.
//! - [`parallel`]: data-parallel updates through burn's collective all-reduce.
//!
//! ## Output folder of a pretraining run
//!
//! ```text
//! OUT/config.json, model.safetensors, genes.tsv   the latest weights, released layout
//! OUT/metrics.jsonl                                one JSON object per logged update
//! OUT/baselines.json                               trivial predictors on the validation set
//! OUT/train_config.json                            the run's configuration
//! OUT/checkpoints/latest, step-NNNNNNNN/           resumable state (see [`checkpoint`])
//! ```
//!
//! ## Reproducibility and resume
//!
//! The model is initialized from the run's seed; the data order and every RDA example are
//! functions of `(seed, position in the data stream)`; the learning rate is a function of the
//! step. A checkpoint therefore holds everything a resumed run needs: weights (with burn's
//! parameter ids), AdamW state, step and data position. A run killed at any moment and resumed
//! logs the same losses as the uninterrupted run (tested with SIGKILL in `tests/cli_pretrain.rs`
//! of the `aido` package).

pub mod baselines;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod finetune;
pub mod metrics;
#[cfg(feature = "collective")]
pub mod multinode;
pub mod optim;
pub mod packed;
#[cfg(feature = "collective")]
pub mod parallel;
pub mod pretrain;

pub use config::{ModelShape, NodeConfig, OptimConfig, Preset, TrainConfig, learning_rate};
pub use data::{CellCorpus, CellLookup, CellSubset, DataSet, Split, StreamCell};
pub use metrics::{StepMetrics, read_metrics};
pub use packed::{PackIndex, PackOptions, PackedCorpus, pack};
pub use pretrain::{Event, PretrainJob, Summary, TrainCorpus, pretrain};

use std::path::PathBuf;

/// What can go wrong in training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value out of range or inconsistent.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A TOML configuration file that does not parse.
    #[error("{}: {detail}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// `--resume` with a configuration that differs from the saved run's.
    #[error(
        "{}: the run was started with a different configuration; resume with the same flags (saved: {saved}; given: {given})",
        path.display()
    )]
    ConfigMismatch {
        /// The saved state.
        path: PathBuf,
        /// The saved configuration (JSON).
        saved: String,
        /// The configuration given now (JSON).
        given: String,
    },
    /// Unusable training data.
    #[error("{}: {detail}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A non-finite loss or gradient: the run stops without writing the bad state.
    #[error(
        "non-finite {what} ({value}) at update {step}; stopped without writing it{}",
        match last_checkpoint { Some(p) => format!(" — the last good checkpoint is {}", p.display()), None => " — no checkpoint had been written yet".into() }
    )]
    NonFinite {
        /// The update.
        step: u64,
        /// Which quantity.
        what: String,
        /// Its value.
        value: f64,
        /// The last complete checkpoint.
        last_checkpoint: Option<PathBuf>,
    },
    /// A multi-node run lost a node, or its nodes disagree: the run stops.
    #[error(
        "multi-node run stopped: {detail}{}",
        match last_checkpoint { Some(p) => format!(" — the last good checkpoint is {}; `resume` on every node continues from it", p.display()), None => " — no checkpoint had been written yet".into() }
    )]
    Node {
        /// What happened.
        detail: String,
        /// The last complete checkpoint of this node.
        last_checkpoint: Option<PathBuf>,
    },
    /// A checkpoint that cannot be written or read.
    #[error("checkpoint {}: {detail}", path.display())]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// File system errors.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or aligning data.
    #[error(transparent)]
    Tokenize(#[from] aido_tokenize::TokenizeError),
    /// Building RDA examples.
    #[error(transparent)]
    Rda(#[from] aido_rda::RdaError),
    /// Model errors (shapes, export).
    #[error(transparent)]
    Model(#[from] aido_model::ModelError),
}

/// Result alias.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
