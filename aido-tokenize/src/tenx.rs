//! Cell Ranger HDF5 (`filtered_feature_bc_matrix.h5`): v3 (`/matrix/...`, `features/{id,name}`)
//! and v2 (`/<genome>/...`, `genes`/`gene_names`). The matrix is genes × cells in CSC, i.e.
//! each cell is one compressed column, so cell windows stream like CSR rows.

use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};
use crate::h5::H5;
use crate::source::{CellSource, CsrChunk, ObsTable, ReadOptions};

/// A Cell Ranger HDF5 file as a [`CellSource`].
pub struct TenxH5Source {
    h5: H5,
    path: PathBuf,
    group: String,
    n_cells: usize,
    n_genes: usize,
    genes: Vec<String>,
    column: String,
    obs: ObsTable,
    next_cell: usize,
}

impl TenxH5Source {
    /// Opens a Cell Ranger HDF5 file.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let h5 = H5::open(path)?;
        let (groups, _) = h5.members("/")?;
        let (group, v3) = if groups.iter().any(|g| g == "matrix") {
            ("matrix".to_string(), true)
        } else if let Some(g) = groups
            .iter()
            .find(|g| h5.is_dataset(&format!("{g}/indptr")))
        {
            (g.clone(), false)
        } else {
            if h5.attr_string("/", "encoding-type")?.as_deref() == Some("anndata") {
                return Err(TokenizeError::InvalidArgument(format!(
                    "{}: this is an AnnData file; name it .h5ad",
                    path.display()
                )));
            }
            return Err(h5.missing(
                "matrix",
                "not a Cell Ranger HDF5 file (no /matrix or /<genome> group)",
            ));
        };
        let col = opts.gene_column.as_deref().unwrap_or("name");
        let genes_obj = match (v3, col) {
            (true, "name") | (true, "gene_symbols") => format!("{group}/features/name"),
            (true, "id") | (true, "gene_ids") => format!("{group}/features/id"),
            (true, other) => format!("{group}/features/{other}"),
            (false, "name") | (false, "gene_symbols") => format!("{group}/gene_names"),
            (false, "id") | (false, "gene_ids") => format!("{group}/genes"),
            (false, other) => format!("{group}/{other}"),
        };
        if !h5.is_dataset(&genes_obj) {
            return Err(h5.missing(&genes_obj, "use `gene_column` name or id"));
        }
        let genes = h5.read_strings(&genes_obj)?;
        let shape = h5.read_index_rows(&format!("{group}/shape"), 0, 2)?;
        let (n_genes, n_cells) = (shape[0] as usize, shape[1] as usize);
        if genes.len() != n_genes {
            return Err(TokenizeError::ShapeMismatch {
                path: path.to_path_buf(),
                object: genes_obj,
                detail: format!("{} gene names for a matrix of {n_genes} genes", genes.len()),
            });
        }
        let barcodes = h5.read_strings(&format!("{group}/barcodes"))?;
        if barcodes.len() != n_cells {
            return Err(TokenizeError::ShapeMismatch {
                path: path.to_path_buf(),
                object: format!("{group}/barcodes"),
                detail: format!(
                    "{} barcodes for a matrix of {n_cells} cells",
                    barcodes.len()
                ),
            });
        }
        let indptr_len = h5
            .shape(&format!("{group}/indptr"))?
            .first()
            .copied()
            .unwrap_or(0);
        let nnz = h5
            .shape(&format!("{group}/data"))?
            .first()
            .copied()
            .unwrap_or(0);
        let n_idx = h5
            .shape(&format!("{group}/indices"))?
            .first()
            .copied()
            .unwrap_or(0);
        if indptr_len != n_cells + 1 || nnz != n_idx {
            return Err(TokenizeError::ShapeMismatch {
                path: path.to_path_buf(),
                object: group.clone(),
                detail: format!(
                    "indptr has {indptr_len} entries (expected {}), data {nnz}, indices {n_idx}",
                    n_cells + 1
                ),
            });
        }
        Ok(TenxH5Source {
            path: path.to_path_buf(),
            column: genes_obj,
            group,
            n_cells,
            n_genes,
            genes,
            obs: ObsTable::from_names(barcodes),
            next_cell: 0,
            h5,
        })
    }
}

impl CellSource for TenxH5Source {
    fn path(&self) -> &Path {
        &self.path
    }
    fn n_cells(&self) -> usize {
        self.n_cells
    }
    fn gene_names(&self) -> &[String] {
        &self.genes
    }
    fn gene_column(&self) -> &str {
        &self.column
    }
    fn obs(&self) -> &ObsTable {
        &self.obs
    }
    fn next_chunk(&mut self, max_cells: usize) -> Result<Option<CsrChunk>> {
        let start = self.next_cell;
        if start >= self.n_cells {
            return Ok(None);
        }
        let end = (start + max_cells).min(self.n_cells);
        let n = end - start;
        let chunk = self
            .h5
            .read_compressed_window(&self.group, start, n, self.n_genes)?;
        self.next_cell = end;
        Ok(Some(chunk))
    }
}
