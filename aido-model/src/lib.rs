//! # aido-model — the AIDO.Cell encoder for burn
//!
//! Backend-generic (`B: Backend`) modules that reproduce the authors' PyTorch model
//! (SPEC-model §3–7), checkpoint loading from Hugging Face-style folders, and cell/gene
//! embeddings.
//!
//! - [`config`]: [`AidoCellConfig`] — presets (3M, 10M, 100M, 650M) and `config.json`.
//! - [`model`]: the modules, named after the checkpoint key tree.
//! - [`attention`]: the single attention seam.
//! - [`load`]: `model.safetensors` / `pytorch_model.bin` loading with typed errors; burnpack.
//! - [`embed`]: pooling and conversion of outputs to `ndarray`.

pub mod attention;
pub mod config;
pub mod embed;
pub mod error;
pub mod load;
pub mod model;

pub use config::{AidoCellConfig, NormKind};
pub use embed::Pooling;
pub use error::{ModelError, Result};
pub use load::{LoadMode, load_checkpoint};
pub use model::{AidoCell, AidoCellModel, EncoderOutput};

/// The CPU backend used by default (burn-flex, f32).
pub type Cpu = burn::backend::Flex;
