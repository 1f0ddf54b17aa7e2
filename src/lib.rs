//! # aido — the AIDO.Cell SDK facade
//!
//! Re-exports the SDK crates under one name and hosts the `aido` command-line tool
//! (`src/main.rs`), the examples and the benchmarks.
//!
//! - [`tokenize`] (`aido-tokenize`): single-cell readers, gene alignment, expression
//!   tokenization, h5ad/safetensors writers and the count simulator.
//! - [`model`] (`aido-model`): the AIDO.Cell encoder, checkpoint loading and embeddings.
//! - [`rda`] (`aido-rda`): the read-depth-aware pretraining examples and masked-value loss.
//! - [`train`] (`aido-train`): the pretraining loop, checkpoints and resume, fine-tuning pieces.
//! - [`eval`] (`aido-eval`): metrics, clustering, plots; [`tasks`] (`aido-tasks`): annotation,
//!   perturbation, in-silico perturbation.
//! - [`pipeline`] (`aido-pipeline`): every command as a library call — open a model by folder
//!   or Hugging Face id, then embed, annotate, cluster, perturb cells in memory or in files.

pub use aido_eval as eval;
pub use aido_kernels as kernels;
pub use aido_model as model;
pub use aido_pipeline as pipeline;
pub use aido_rda as rda;
pub use aido_tasks as tasks;
pub use aido_tokenize as tokenize;
pub use aido_train as train;

/// Process measurements used by the examples and benchmarks.
pub mod process {
    /// Peak resident set size of this process in GB (`VmHWM` of `/proc/self/status`; Linux
    /// only, `None` elsewhere).
    pub fn peak_rss_gb() -> Option<f64> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb: f64 = s
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0 / 1024.0)
    }
}
