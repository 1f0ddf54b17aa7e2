//! The one rule for a command's h5ad output: the user's whole file plus the results, or a small
//! file of the processed cells' `obs` plus the same results. Both are written under a temporary
//! name and renamed; `uns` entries use one model ([`UnsValue`](aido_tokenize::h5ad_edit::UnsValue)).

use std::path::Path;

use aido_tokenize::h5ad_edit::{H5adAdditions, write_input_plus};
use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::{CsrChunk, InputFormat, ObsTable, ReadOptions, open_source};

use crate::error::{PipelineError, Result};

/// Refuses an output path before any computation: its folder exists and takes a new file, and
/// the path is not a folder. `option` names the option that gave it. The probe is a hidden
/// empty file beside the output, removed at once.
pub fn check_writable(path: &Path, option: &'static str) -> Result<()> {
    let err = |detail: String| PipelineError::Output {
        option,
        path: path.to_path_buf(),
        detail,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(err(format!(
            "the folder {} does not exist (create it first)",
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(err("is a folder; give a file name".into()));
    }
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let probe = dir.join(format!(".{name}.probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(err(format!("cannot write in {}: {e}", dir.display()))),
    }
}

/// Refuses an output folder before any computation: it is a folder if it exists, and the
/// folder it is (or will be) created in exists and takes new files.
pub fn check_out_folder(path: &Path, option: &'static str) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(PipelineError::Output {
            option,
            path: path.to_path_buf(),
            detail: "is a file; this output is a folder".into(),
        });
    }
    if !path.is_dir() {
        // Created later: its parent must take it.
        return check_writable(path, option);
    }
    check_writable(&path.join("probe"), option).map_err(|e| match e {
        PipelineError::Output { detail, .. } => PipelineError::Output {
            option,
            path: path.to_path_buf(),
            detail,
        },
        e => e,
    })
}

/// Refuses a key for an AnnData entry (`key_added`) that anndata cannot hold: empty, or with
/// a `/` (an HDF5 path separator).
pub fn check_key_name(key: &str, option: &'static str) -> Result<()> {
    if key.trim().is_empty() || key.contains('/') || key == "." || key == ".." {
        return Err(PipelineError::option(
            option,
            format!("'{key}': a key must be non-empty and hold no '/'"),
        ));
    }
    Ok(())
}

/// Says (as an [`Event::Note`](crate::Event::Note)) which entries of `input` the results
/// replace when written back whole, and, where a result's key can be chosen, how to keep them.
pub fn note_replaced(input: &Path, add: &H5adAdditions, on_event: &mut dyn FnMut(crate::Event)) {
    if let Ok(r) = aido_tokenize::h5ad_edit::replaced_entries(input, add)
        && !r.is_empty()
    {
        let keyed = r
            .iter()
            .any(|e| !e.starts_with("uns/") && !e.starts_with("var/"));
        on_event(crate::Event::Note(format!(
            "replacing {} of {}{}",
            r.join(", "),
            input.display(),
            if keyed {
                " (`key_added` writes the results under another name)"
            } else {
                ""
            }
        )));
    }
}

/// Whether `output` gets the whole input: an h5ad input written to an h5ad, unless the caller
/// asked for the small file.
pub fn whole_input(input: &Path, small_file: bool) -> Result<bool> {
    Ok(!small_file && InputFormat::detect(input)? == InputFormat::H5ad)
}

/// Writes `add` (per-cell entries for the cells `kept` of the `n_cells` of `input`) to
/// `output`: with `whole`, the whole input plus `add` (every cell must have been kept: `what`
/// says what the skipped cells lack, and the error says how to get the small file); otherwise a
/// small file whose `obs` is `obs()` (the kept cells' rows) plus `add`'s obs columns, obsm and
/// uns entries. Entries of the input that the whole file's results replace are named in an
/// [`Event::Note`](crate::Event::Note).
#[allow(clippy::too_many_arguments)]
pub fn write_results(
    input: &Path,
    output: &Path,
    whole: bool,
    n_cells: usize,
    kept: &[usize],
    add: H5adAdditions,
    obs: impl FnOnce() -> Result<ObsTable>,
    on_event: &mut dyn FnMut(crate::Event),
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
        note_replaced(input, &add, on_event);
        write_input_plus(input, output, &add)?;
    } else {
        let mut obs = obs()?;
        obs.columns.extend(add.obs);
        // An input that is not an h5ad (10x, Matrix Market, CSV) becomes a whole AnnData: X the
        // counts read for these cells, var the genes, obs the barcodes. (An h5ad input written
        // to the small file on request keeps the small file's meaning: no X.)
        let (genes, x) = if InputFormat::detect(input)? == InputFormat::H5ad {
            (Vec::new(), None)
        } else {
            let (genes, csr) = kept_counts(input, kept)?;
            let n_cols = genes.len();
            (genes, Some(XMatrix::Csr { csr, n_cols }))
        };
        let mut w = H5adWriter::new(obs, genes);
        w.x = x;
        w.obsm = add.obsm;
        w.uns = add.uns;
        w.write(output)?;
    }
    Ok(())
}

/// The genes of `input` and the counts of its cells `kept` (ascending input indices), read in
/// windows: only those rows are held.
fn kept_counts(input: &Path, kept: &[usize]) -> Result<(Vec<String>, CsrChunk)> {
    let mut source = open_source(input, &ReadOptions::default())?;
    let genes = source.gene_names().to_vec();
    let mut out = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    let mut next = kept.iter().peekable();
    while next.peek().is_some() {
        let Some(chunk) = source.next_chunk(4096)? else {
            break;
        };
        while let Some(&&cell) = next.peek() {
            if cell >= chunk.first_cell + chunk.n_cells() {
                break;
            }
            let (idx, val) = chunk.row(cell - chunk.first_cell);
            out.indices.extend_from_slice(idx);
            out.data.extend_from_slice(val);
            out.indptr.push(out.indices.len());
            next.next();
        }
    }
    if out.n_cells() != kept.len() {
        return Err(PipelineError::input(
            input.display(),
            format!(
                "{} of the {} processed cells could be read back for X",
                out.n_cells(),
                kept.len()
            ),
        ));
    }
    Ok((genes, out))
}
