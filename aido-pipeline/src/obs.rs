//! Reading what the user's `obs` / `obsm` hold, with errors naming the file, column and cell.

use std::path::Path;

use aido_eval::Labels;
use aido_tokenize::{ObsColumn, ObsTable};
use ndarray::Array2;

use crate::error::{PipelineError, Result};

/// The labels of `obs/<col>` (any dtype), refusing a missing column (listing those there are)
/// or an unlabelled cell.
pub fn obs_labels(obs: &ObsTable, input: &dyn std::fmt::Display, col: &str) -> Result<Labels> {
    let c = obs.column(col).ok_or_else(|| {
        let names: Vec<&str> = obs.columns.iter().map(|(n, _)| n.as_str()).collect();
        PipelineError::input(
            input,
            format!(
                "obs has no column '{col}' (columns: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    })?;
    Labels::from_obs_column(c).map_err(|i| {
        PipelineError::input(
            input,
            format!(
                "obs/{col} has no value for cell {i} ('{}'): label every cell, or subset the data",
                obs.cell_name(i)
            ),
        )
    })
}

/// Every value of an obs column as text.
pub fn obs_strings(c: &ObsColumn) -> Vec<String> {
    (0..c.len()).map(|i| c.display(i)).collect()
}

/// A matrix from an h5ad's `obsm`, refusing NaN/inf with the file, key and cell.
pub fn obsm_matrix(file: &Path, key: &str, obs: &ObsTable) -> Result<Array2<f32>> {
    let m = aido_tokenize::h5ad::read_obsm(file, key)?;
    check_finite(m.view(), &file.display(), key, obs)?;
    Ok(m)
}

/// Refuses a non-finite value of an embedding, naming the cell and column.
pub fn check_finite(
    m: ndarray::ArrayView2<'_, f32>,
    input: &dyn std::fmt::Display,
    key: &str,
    obs: &ObsTable,
) -> Result<()> {
    if let Some((i, v)) = m.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let row = i / m.ncols().max(1);
        return Err(PipelineError::input(
            input,
            format!(
                "obsm/{key} holds {v} at cell {row} ('{}'), column {}: embeddings must be finite",
                obs.cell_name(row),
                i % m.ncols().max(1)
            ),
        ));
    }
    Ok(())
}

/// Writes `value` as pretty JSON (with a final newline) to `path` atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| PipelineError::input(path.display(), e.to_string()))?
        + "\n";
    aido_tokenize::io_util::write_bytes_atomically(path, text.as_bytes())?;
    Ok(())
}
