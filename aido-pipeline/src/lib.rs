//! AIDO.Cell pipelines as library calls: what the `aido` binary runs, for a Rust tool (and the
//! Python package) to call without files or a shell.
//!
//! - [`Pretrained::open`] opens a model from a checkpoint folder or a Hugging Face id
//!   (`genbio-ai/AIDO.Cell-3M`, resolved through the `huggingface_hub` cache: [`hub`]), with its
//!   gene list (the folder's `genes.tsv`, else the built-in AIDO.Cell list for a 19,266-position
//!   model), and checks precision, sequence length and backend once.
//! - Each task has an options struct (`Default` = the CLI's defaults), a function on cells in
//!   memory ([`CountsMatrix`], borrowed CSR arrays) and one on files, and a typed,
//!   serde-serializable report.
//! - Nothing prints: progress, notes and the gene-alignment report reach the caller as
//!   [`Event`]s.
#![warn(missing_docs)]

pub mod annotate;
pub mod cluster;
pub mod demo;
pub mod device;
pub mod embed;
pub mod error;
pub mod hub;
pub mod insilico;
pub mod matrix;
pub mod obs;
pub mod output;
pub mod perturb;
pub mod perturb_benchmark;
pub mod perturb_score;
pub mod pretrain;
pub mod pretrained;
pub mod simulate;
pub mod tokenize;
pub mod vocabulary;

use std::path::PathBuf;

pub use device::{OnDevice, on_device, set_threads, threads};
pub use embed::{
    EmbedOptions, EmbedOutput, EmbedReport, MergeReport, OutFormat, OutputKind, Shard, embed_file,
    embed_matrix, merge_shards,
};
pub use error::{PipelineError, Result};
pub use hub::{HubSettings, ModelId};
pub use matrix::{CountsMatrix, Indices, Values};
pub use pretrained::{ModelSource, OpenOptions, Pretrained};

/// What a pipeline reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Bytes of a model file downloaded from the hub.
    Download {
        /// The model id.
        model: String,
        /// The file in the repository.
        file: String,
        /// Bytes so far.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// How the input's genes were placed on the model's gene list (the report `Display`s as
    /// the CLI prints it).
    Aligned(aido_tokenize::AlignmentReport),
    /// Work done so far in a stage (`"embed"`, `"predict"`, …), in cells.
    Progress {
        /// The stage.
        stage: &'static str,
        /// Cells done (read, including skipped ones).
        done: usize,
        /// Cells in all.
        total: usize,
    },
    /// Fine-tuning progress (caching, updates, epochs, resume).
    Finetune(aido_tasks::finetune::Event),
    /// A line of what the run did (a CLI prints it to standard output).
    Info(String),
    /// Something the user should know (a warning); the run goes on.
    Note(String),
    /// An output file or folder is complete.
    Wrote {
        /// Its path.
        path: PathBuf,
        /// What it holds.
        what: String,
    },
}

/// An event sink that drops everything.
pub fn ignore_events(_: Event) {}
