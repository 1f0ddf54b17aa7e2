//! # aido — the AIDO.Cell SDK facade
//!
//! Re-exports the SDK crates under one name and hosts the `aido` command-line tool
//! (`src/main.rs`), the examples and the benchmarks.
//!
//! - [`tokenize`] (`aido-tokenize`): single-cell readers, gene alignment, expression
//!   tokenization, h5ad/safetensors writers and the count simulator.
//! - [`model`] (`aido-model`): the AIDO.Cell encoder, checkpoint loading and embeddings.

pub use aido_model as model;
pub use aido_tokenize as tokenize;
