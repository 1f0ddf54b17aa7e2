//! The one error type of the data layer. Every variant names the file and, where it applies, the
//! HDF5 path, the field, the line, the cell or the gene that was wrong.

use std::path::PathBuf;

/// Everything that can go wrong while reading, aligning, tokenizing or writing single-cell data.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// The input file or folder does not exist.
    #[error("{path}: no such file or folder")]
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// An operating-system I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not HDF5, or is truncated/corrupt so that HDF5 cannot parse it.
    #[error("{path}: cannot be read as HDF5 ({detail})")]
    NotHdf5 {
        /// The file.
        path: PathBuf,
        /// What the HDF5 reader said.
        detail: String,
    },
    /// An HDF5 object could not be read (corrupt or truncated data, unsupported datatype).
    #[error("{path}: HDF5 object '{object}': {detail}")]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// The HDF5 path of the object, e.g. `X/indptr`.
        object: String,
        /// What went wrong.
        detail: String,
    },
    /// A required HDF5 object (group, dataset or attribute) is missing.
    #[error("{path}: required '{object}' is missing{hint}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The HDF5 path or field that should be there, e.g. `X` or `var/feature_name`.
        object: String,
        /// Optional hint (what is there instead), starting with "; ".
        hint: String,
    },
    /// An encoding that this reader does not support (legacy AnnData, unknown `encoding-type`).
    #[error("{path}: '{object}' has unsupported encoding {encoding}{hint}")]
    UnsupportedEncoding {
        /// The file.
        path: PathBuf,
        /// The HDF5 object.
        object: String,
        /// The encoding found.
        encoding: String,
        /// Optional hint, starting with "; ".
        hint: String,
    },
    /// Sizes of related arrays disagree (e.g. `indptr` vs `data`, `shape` vs the gene list).
    #[error("{path}: shape mismatch in '{object}': {detail}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The object, e.g. `X`.
        object: String,
        /// What disagrees with what.
        detail: String,
    },
    /// A text file (TSV, CSV, Matrix Market) has a malformed line.
    #[error("{path}:{line}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A count is negative, NaN or infinite: raw counts are required.
    #[error(
        "{path}: cell {cell} ('{cell_name}'), gene '{gene}': invalid count {value} (raw UMI counts must be finite and >= 0)"
    )]
    InvalidCount {
        /// The file.
        path: PathBuf,
        /// 0-based cell (row) index in the input.
        cell: usize,
        /// The cell's obs name.
        cell_name: String,
        /// The gene name in the input.
        gene: String,
        /// The offending value.
        value: f32,
    },
    /// A count is not an integer while strict mode is on (the data looks normalized).
    #[error(
        "{path}: cell {cell} ('{cell_name}'), gene '{gene}': non-integer count {value}; the input looks normalized (log-normalized or scaled), but AIDO.Cell needs raw counts: use a raw-count layer with `layer` NAME, or pass `allow_non_integer` to go on anyway"
    )]
    NonIntegerCount {
        /// The file.
        path: PathBuf,
        /// 0-based cell index.
        cell: usize,
        /// The cell's obs name.
        cell_name: String,
        /// The gene name.
        gene: String,
        /// The offending value.
        value: f32,
    },
    /// Cells whose aligned total is zero (they would give NaN in the reference).
    #[error(
        "{path}: {count} cell(s) have no counts in the aligned genes (total = 0), e.g. {examples}; pass `skip_empty` to drop them"
    )]
    EmptyCells {
        /// The file.
        path: PathBuf,
        /// How many such cells were found.
        count: usize,
        /// Up to five `index ('name')` examples.
        examples: String,
    },
    /// The data's genes overlap the vocabulary too little.
    #[error(
        "{path}: only {matched} of the data's {n_data} genes (column '{column}') are in the gene vocabulary; at least {required} are required{hint}"
    )]
    TooLittleOverlap {
        /// The file.
        path: PathBuf,
        /// Genes found in the vocabulary.
        matched: usize,
        /// Genes in the data.
        n_data: usize,
        /// The column the names came from.
        column: String,
        /// The minimum that was required.
        required: usize,
        /// Optional hint, starting with "; ".
        hint: String,
    },
    /// The gene vocabulary file is malformed.
    #[error("{path}: invalid gene vocabulary: {detail}")]
    Vocabulary {
        /// The TSV file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An argument or option is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The input format could not be determined from the path.
    #[error(
        "{path}: unknown input format (expected .h5ad, a 10x .h5, a Matrix Market folder or .mtx[.gz], or .csv/.tsv[.gz])"
    )]
    UnknownFormat {
        /// The path.
        path: PathBuf,
    },
}

/// Result alias of this crate.
pub type Result<T, E = TokenizeError> = std::result::Result<T, E>;

impl TokenizeError {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            TokenizeError::NotFound { path }
        } else {
            TokenizeError::Io { path, source }
        }
    }
}
