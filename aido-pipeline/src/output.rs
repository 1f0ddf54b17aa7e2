//! The one rule for a command's h5ad output: the user's whole file plus the results, or a small
//! file of the processed cells' `obs` plus the same results. Both are written under a temporary
//! name and renamed; `uns` entries use one model ([`UnsValue`](aido_tokenize::h5ad_edit::UnsValue)).

use std::path::Path;

use aido_tokenize::h5ad_edit::{H5adAdditions, write_input_plus};
use aido_tokenize::h5ad_out::H5adWriter;
use aido_tokenize::{InputFormat, ObsTable};

use crate::error::{PipelineError, Result};

/// Whether `output` gets the whole input: an h5ad input written to an h5ad, unless the caller
/// asked for the small file.
pub fn whole_input(input: &Path, small_file: bool) -> Result<bool> {
    Ok(!small_file && InputFormat::detect(input)? == InputFormat::H5ad)
}

/// Writes `add` (per-cell entries for the cells `kept` of the `n_cells` of `input`) to
/// `output`: with `whole`, the whole input plus `add` (every cell must have been kept: `what`
/// says what the skipped cells lack, and the error says how to get the small file); otherwise a
/// small file whose `obs` is `obs()` (the kept cells' rows) plus `add`'s obs columns, obsm and
/// uns entries.
pub fn write_results(
    input: &Path,
    output: &Path,
    whole: bool,
    n_cells: usize,
    kept: &[usize],
    add: H5adAdditions,
    obs: impl FnOnce() -> Result<ObsTable>,
) -> Result<()> {
    if whole {
        if kept.len() != n_cells {
            return Err(PipelineError::input(
                input.display(),
                format!(
                    "{} cells had no counts in the model's genes and were skipped, so the results \
                     do not cover every cell of the file: drop those cells first, or write the \
                     processed cells only (`embeddings_only`)",
                    n_cells - kept.len()
                ),
            ));
        }
        write_input_plus(input, output, &add)?;
    } else {
        let mut obs = obs()?;
        obs.columns.extend(add.obs);
        let mut w = H5adWriter::new(obs, Vec::new());
        w.obsm = add.obsm;
        w.uns = add.uns;
        w.write(output)?;
    }
    Ok(())
}
