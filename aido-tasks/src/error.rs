//! The errors of the downstream tasks.

use std::path::PathBuf;

/// What can go wrong in a downstream task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Unusable labels (missing column, one class, a class too small for the split).
    #[error("{0}")]
    Labels(String),
    /// A split column with values other than train / val / test, or an empty part.
    #[error("{0}")]
    Split(String),
    /// A configuration value out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Data whose genes do not align with a classifier's.
    #[error("{0}")]
    Genes(String),
    /// A non-finite loss or output.
    #[error("non-finite {what} at epoch {epoch}; stopped without writing it")]
    NonFinite {
        /// Which quantity.
        what: String,
        /// The epoch.
        epoch: usize,
    },
    /// A run folder or classifier folder that cannot be written or read.
    #[error("{}: {detail}", path.display())]
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
    /// Training machinery.
    #[error(transparent)]
    Train(#[from] aido_train::TrainError),
    /// The model.
    #[error(transparent)]
    Model(#[from] aido_model::ModelError),
    /// Reading data.
    #[error(transparent)]
    Tokenize(#[from] aido_tokenize::TokenizeError),
    /// Metrics and the analysis core.
    #[error(transparent)]
    Eval(#[from] aido_eval::EvalError),
}

/// Result alias.
pub type Result<T, E = TaskError> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    }
}
