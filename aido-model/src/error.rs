//! Errors of the model crate.

use std::path::PathBuf;

/// What can go wrong building or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An inconsistent configuration.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A malformed `config.json`.
    #[error("{path}: {detail}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// I/O on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No weights file in a checkpoint folder.
    #[error("{0}: no model.safetensors or pytorch_model.bin")]
    NoWeights(PathBuf),
    /// A weights file that cannot be parsed (e.g. truncated).
    #[error("{path}: cannot read weights: {detail}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        detail: String,
    },
    /// A required key is missing.
    #[error("{path}: missing key '{key}'")]
    MissingKey {
        /// The weights file.
        path: PathBuf,
        /// The checkpoint key.
        key: String,
    },
    /// A key the model does not know.
    #[error("{path}: unexpected key '{key}'")]
    UnexpectedKey {
        /// The weights file.
        path: PathBuf,
        /// The checkpoint key.
        key: String,
    },
    /// A tensor whose shape disagrees with the configuration.
    #[error("{path}: key '{key}' has shape {found:?}, the configuration implies {expected:?}")]
    Shape {
        /// The weights file.
        path: PathBuf,
        /// The checkpoint key.
        key: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// Model input that does not fit the model (wrong length, unknown gene, …).
    #[error("{0}")]
    Input(String),
    /// The model produced NaN or infinity for a cell (never passed on to outputs).
    #[error(
        "non-finite {what} for cell {cell} of the batch (check the input values and the weights)"
    )]
    NonFinite {
        /// Row within the batch.
        cell: usize,
        /// Which output.
        what: &'static str,
    },
    /// A compute device that this build or machine does not provide.
    #[error("{0}")]
    Device(String),
}

/// Result alias.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
