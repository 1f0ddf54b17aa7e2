//! The one error type of this crate.

/// Errors of the evaluation crate. Each names what was wrong (which labels, which matrix,
/// which cell) so the CLI can add the file and key.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Two inputs that must describe the same cells have different lengths.
    #[error("{what}: {a} values against {b}")]
    LengthMismatch {
        /// What was compared.
        what: String,
        /// Length of the first input.
        a: usize,
        /// Length of the second input.
        b: usize,
    },
    /// A metric that needs several labels got too few (or too many) distinct ones.
    #[error("{metric} needs {need}, got {got} distinct labels")]
    LabelCount {
        /// The metric.
        metric: &'static str,
        /// What it needs, in words.
        need: String,
        /// Distinct labels found.
        got: usize,
    },
    /// A matrix holds NaN or an infinity.
    #[error("{what} holds a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        /// Which matrix.
        what: String,
        /// Row (cell) of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The value.
        value: f64,
    },
    /// Input that does not look like raw counts where counts are needed.
    #[error("{0}")]
    NotCounts(String),
    /// A setting outside its range.
    #[error("invalid setting: {0}")]
    InvalidArgument(String),
    /// A numeric routine failed (e.g. an eigen-decomposition did not converge).
    #[error("numerics: {0}")]
    Numerics(String),
    /// Writing a plot or report failed.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;

/// Errors on the first non-finite value of a row-major `rows × cols` slice.
pub fn check_finite(what: &str, data: &[f32], cols: usize) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::NonFinite {
            what: what.to_string(),
            row: i / cols.max(1),
            col: i % cols.max(1),
            value: f64::from(data[i]),
        });
    }
    Ok(())
}
