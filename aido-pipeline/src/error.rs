//! One error type for every pipeline: each variant names the file, option, cell or model id.

use std::path::PathBuf;

/// Errors of the pipelines. Library texts name options by their field name (`batch_size`); the
/// `aido` binary maps them to its flags.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading, aligning or writing cells.
    #[error(transparent)]
    Tokenize(#[from] aido_tokenize::TokenizeError),
    /// Loading or running the model.
    #[error(transparent)]
    Model(#[from] aido_model::ModelError),
    /// A downstream task (annotation, perturbation, in-silico).
    #[error(transparent)]
    Task(#[from] aido_tasks::TaskError),
    /// Training (the fine-tuning backbone's preparation, checkpoints).
    #[error(transparent)]
    Train(#[from] aido_train::TrainError),
    /// Metrics, clustering, plots.
    #[error(transparent)]
    Eval(#[from] aido_eval::EvalError),
    /// What an input holds is unusable (a column missing, a label absent, a value out of
    /// range): `input` names the file (or matrix), `detail` the column and cell.
    #[error("{input}: {detail}")]
    Input {
        /// The file or matrix.
        input: String,
        /// What is wrong, naming the column, key or cell.
        detail: String,
    },
    /// A file-system operation.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A model named neither an existing folder nor a Hugging Face id.
    #[error(
        "the model '{given}' is not a folder here (no such file or folder), nor a Hugging Face id of the form ORG/NAME[@REVISION]"
    )]
    ModelNotFound {
        /// What the caller gave.
        given: String,
    },
    /// A model folder without the files of a checkpoint.
    #[error(
        "{folder}: not an AIDO.Cell checkpoint folder ({detail}); a checkpoint holds config.json and model.safetensors or pytorch_model.bin"
    )]
    NotACheckpoint {
        /// The folder.
        folder: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// `HF_HUB_OFFLINE` is set and the cache lacks the model (or some of its files).
    #[error(
        "{id}: not in the Hugging Face cache {cache} ({detail}) and HF_HUB_OFFLINE is set, so nothing is downloaded; unset HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE / HF_HOME at a cache that holds it"
    )]
    HubOffline {
        /// The model id.
        id: String,
        /// The cache folder searched.
        cache: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The hub has no such model, or no such revision of it, or refused access.
    #[error("{id}: {detail} (hub {endpoint}; cache {cache})")]
    HubNotFound {
        /// The model id.
        id: String,
        /// The hub's answer.
        detail: String,
        /// The endpoint asked.
        endpoint: String,
        /// The cache folder.
        cache: PathBuf,
    },
    /// A download failed or arrived incomplete (nothing is left that a later run could take
    /// for a complete file).
    #[error("{id}: downloading {file} failed: {detail} (cache {cache})")]
    HubDownload {
        /// The model id.
        id: String,
        /// The file in the repository.
        file: String,
        /// The cause.
        detail: String,
        /// The cache folder.
        cache: PathBuf,
    },
    /// No gene list for a model.
    #[error(
        "no gene list for {model}: it has {positions} positions, so it is not a 19,266-position AIDO.Cell model whose built-in list applies; pass a gene list (the genes the model was trained with, `gene_name<TAB>index`) or put genes.tsv in the model folder"
    )]
    NoGeneList {
        /// The model folder or id.
        model: String,
        /// Sequence positions of the checkpoint.
        positions: usize,
    },
    /// A gene list whose length does not match the model.
    #[error(
        "{genes} lists {n_genes} genes but the checkpoint {model} has {model_genes} gene positions: use the gene list the model was trained with"
    )]
    GeneListLength {
        /// Where the list came from.
        genes: String,
        /// Its genes.
        n_genes: usize,
        /// The model.
        model: String,
        /// The model's gene positions (sequence length − 2).
        model_genes: usize,
    },
    /// An output path that cannot be written, found before any computation.
    #[error("`{option}` {path}: {detail}; nothing was computed")]
    Output {
        /// The option that gave the path.
        option: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An option out of its range or inconsistent with another.
    #[error("{option}: {detail}")]
    Option {
        /// The option's name (a field of the options struct).
        option: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The model produced a non-finite value for a cell.
    #[error(
        "{input}: the model gave a non-finite {what} for cell {cell} ('{name}'); nothing was written"
    )]
    NonFinite {
        /// The input (file or in-memory matrix).
        input: String,
        /// Cell index in the input.
        cell: usize,
        /// The cell's obs name.
        name: String,
        /// Which output.
        what: String,
    },
    /// The caller stopped the run (e.g. Ctrl-C in Python); nothing was written.
    #[error("interrupted; nothing was written")]
    Interrupted,
}

/// Result alias of the pipelines.
pub type Result<T> = std::result::Result<T, PipelineError>;

impl PipelineError {
    /// An [`PipelineError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PipelineError {
        let path = path.into();
        move |source| PipelineError::Io { path, source }
    }

    /// An [`PipelineError::Input`] about `input`.
    pub fn input(input: impl std::fmt::Display, detail: impl Into<String>) -> PipelineError {
        PipelineError::Input {
            input: input.to_string(),
            detail: detail.into(),
        }
    }

    /// An [`PipelineError::Option`].
    pub fn option(option: &'static str, detail: impl Into<String>) -> PipelineError {
        PipelineError::Option {
            option,
            detail: detail.into(),
        }
    }
}
