//! # aido-rda — the read-depth-aware pretraining objective (SPEC-rda-training §1)
//!
//! From one cell of aligned raw counts, [`RdaSampler::example`] builds one training example:
//!
//! 1. with probability [`RdaConfig::downsample_prob`] the cell is thinned: `b ~ Beta(α, β)` once,
//!    then `x_g ~ Binomial(x_raw_g, b)` per gene; otherwise `x = x_raw`;
//! 2. depth tokens `T = log10(total(x_raw))`, `S = log10(total(x))`, no floor;
//! 3. input `ln(1 + x_g / total(x) · 1e4)`, target `ln(1 + x_raw_g / total(x_raw) · 1e4)` — the
//!    same arithmetic as inference preprocessing (`aido_tokenize::PreprocessConfig`);
//! 4. masking: a fraction of the measured genes that are non-zero in the input and a fraction of
//!    the measured zero genes get the mask value −1; depth tokens are never masked;
//! 5. [`masked_mse`]: mean squared error over the masked positions of the batch.
//!
//! Randomness: every example draws from its own RNG seeded by `(seed, epoch, cell)`, so a
//! data stream is reproducible, independent of batching and thread count, and a resumed run
//! continues it exactly from its data position alone.

mod config;
mod example;
mod loss;

pub use config::{RdaConfig, Replacement};
pub use example::{RdaBatch, RdaExample, RdaSampler};
pub use loss::masked_mse;

/// What can go wrong building examples.
#[derive(Debug, thiserror::Error)]
pub enum RdaError {
    /// A configuration value out of range.
    #[error("invalid RDA configuration: {0}")]
    Config(String),
    /// A cell that cannot give an example.
    #[error("cell {cell}: {detail}")]
    Cell {
        /// The cell's index in its source.
        cell: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Result alias.
pub type Result<T, E = RdaError> = std::result::Result<T, E>;
