//! # aido-model — the AIDO.Cell encoder for burn
//!
//! Backend-generic (`B: Backend`) modules that reproduce the authors' PyTorch model
//! (SPEC-model §3–7), checkpoint loading from Hugging Face-style folders, and cell/gene
//! embeddings.
//!
//! - [`config`]: [`AidoCellConfig`] — presets (3M, 10M, 100M, 650M) and `config.json`.
//! - [`model`]: the modules, named after the checkpoint key tree.
//! - [`attention`]: the single attention seam, a backend extension with a linear-memory
//!   backward ([`attention::AttentionBackend`]).
//! - [`load`]: `model.safetensors` / `pytorch_model.bin` loading with typed errors; burnpack.
//! - [`save`]: writing a checkpoint folder in the released layout.
//! - [`lora`]: low-rank adapters on q/k/v/out for fine-tuning, mergeable into the weights.
//! - [`embed`]: pooling, gene embeddings, the batch [`Embedder`], conversion to `ndarray`.
//! - [`backend`]: the CPU/CUDA/wgpu backends and [`DeviceKind`].

pub use aido_tokenize;
pub use burn;

pub mod attention;
pub mod backend;
pub mod config;
pub mod embed;
pub mod error;
pub mod load;
pub mod lora;
pub mod model;
pub mod save;

pub use attention::AttentionBackend;
pub use backend::{Cpu, DeviceKind};
pub use config::{AidoCellConfig, NormKind, Precision};
pub use embed::{Embedder, Embeddings, Pooling};
pub use error::{ModelError, Result};
pub use load::{LoadMode, load_checkpoint};
pub use model::{
    AidoCell, AidoCellModel, EncoderOutput, GeneEmbeddingConfig, LayerConfig, Mlp, MlpConfig,
};
pub use save::save_checkpoint;

// What the API takes from the data layer, so `cargo add aido-model` is enough to embed a file.
pub use aido_tokenize::{
    AlignOptions, AlignmentReport, CellSource, GeneAlignment, GeneIdMode, GeneVocab,
    PreprocessConfig, ReadOptions, TokenBatch, TokenizeError, TokenizeOptions, Tokenizer,
    open_source,
};
