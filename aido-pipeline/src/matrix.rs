//! Cells held in memory: a counts matrix over borrowed arrays (CSR or dense, any integer or
//! float type), read in windows like a file, never copied or densified whole.

use std::path::{Path, PathBuf};

use aido_tokenize::{CellSource, CsrChunk, ObsTable, TokenizeError};

use crate::error::{PipelineError, Result};

/// Borrowed integer arrays (CSR `indptr` / `indices`) in the caller's type.
#[derive(Debug, Clone, Copy)]
pub enum Indices<'a> {
    /// `int32`.
    I32(&'a [i32]),
    /// `int64`.
    I64(&'a [i64]),
    /// `uint32`.
    U32(&'a [u32]),
    /// `uint64`.
    U64(&'a [u64]),
}

impl Indices<'_> {
    fn len(&self) -> usize {
        match self {
            Indices::I32(v) => v.len(),
            Indices::I64(v) => v.len(),
            Indices::U32(v) => v.len(),
            Indices::U64(v) => v.len(),
        }
    }

    /// Entry `i` as an index; negative values map to `usize::MAX` (refused by the checks).
    fn get(&self, i: usize) -> usize {
        match self {
            Indices::I32(v) => usize::try_from(v[i]).unwrap_or(usize::MAX),
            Indices::I64(v) => usize::try_from(v[i]).unwrap_or(usize::MAX),
            Indices::U32(v) => v[i] as usize,
            Indices::U64(v) => usize::try_from(v[i]).unwrap_or(usize::MAX),
        }
    }
}

/// Borrowed values in the caller's type (counts are read as `f32`, as from files).
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// `float32`.
    F32(&'a [f32]),
    /// `float64`.
    F64(&'a [f64]),
    /// `int8`.
    I8(&'a [i8]),
    /// `int16`.
    I16(&'a [i16]),
    /// `int32`.
    I32(&'a [i32]),
    /// `int64`.
    I64(&'a [i64]),
    /// `uint8`.
    U8(&'a [u8]),
    /// `uint16`.
    U16(&'a [u16]),
    /// `uint32`.
    U32(&'a [u32]),
    /// `uint64`.
    U64(&'a [u64]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I8(v) => v.len(),
            Values::I16(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::U8(v) => v.len(),
            Values::U16(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::U64(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> f32 {
        match self {
            Values::F32(v) => v[i],
            Values::F64(v) => v[i] as f32,
            Values::I8(v) => f32::from(v[i]),
            Values::I16(v) => f32::from(v[i]),
            Values::I32(v) => v[i] as f32,
            Values::I64(v) => v[i] as f32,
            Values::U8(v) => f32::from(v[i]),
            Values::U16(v) => f32::from(v[i]),
            Values::U32(v) => v[i] as f32,
            Values::U64(v) => v[i] as f32,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Layout<'a> {
    Csr {
        indptr: Indices<'a>,
        indices: Indices<'a>,
        data: Values<'a>,
    },
    /// Row-major `[n_cells, n_genes]`.
    Dense(Values<'a>),
}

/// A cells × genes counts matrix in memory, with gene names and an `obs` table: the input of
/// every `*_matrix` pipeline function. The arrays are borrowed; windows of cells are converted
/// as they are read.
#[derive(Debug, Clone)]
pub struct CountsMatrix<'a> {
    n_cells: usize,
    genes: Vec<String>,
    layout: Layout<'a>,
    obs: ObsTable,
    label: PathBuf,
    gene_column: String,
}

impl<'a> CountsMatrix<'a> {
    /// A CSR matrix (`indptr` `[n_cells + 1]`, `indices` and `data` `[nnz]`, column indices
    /// into `genes`). Checked in one pass: lengths, non-decreasing `indptr`, indices in range.
    /// `obs` names the cells (and holds label columns); `None`: cells `0`, `1`, ….
    pub fn csr(
        genes: Vec<String>,
        indptr: Indices<'a>,
        indices: Indices<'a>,
        data: Values<'a>,
        obs: Option<ObsTable>,
    ) -> Result<Self> {
        let bad = |d: String| PipelineError::option("matrix", d);
        if indptr.len() == 0 {
            return Err(bad("indptr is empty (it has n_cells + 1 entries)".into()));
        }
        let n_cells = indptr.len() - 1;
        let nnz = indices.len();
        if data.len() != nnz {
            return Err(bad(format!(
                "indices has {nnz} entries but data has {}",
                data.len()
            )));
        }
        if indptr.get(0) != 0 || indptr.get(n_cells) != nnz {
            return Err(bad(format!(
                "indptr must run from 0 to nnz = {nnz}; it runs from {} to {}",
                indptr.get(0) as i128,
                indptr.get(n_cells) as i128
            )));
        }
        for i in 0..n_cells {
            if indptr.get(i + 1) < indptr.get(i) {
                return Err(bad(format!("indptr decreases at cell {i}")));
            }
        }
        for k in 0..nnz {
            let j = indices.get(k);
            if j >= genes.len() {
                return Err(bad(format!(
                    "stored value {k} has gene index {} outside 0..{}",
                    j as i128,
                    genes.len()
                )));
            }
        }
        Self::build(
            n_cells,
            genes,
            Layout::Csr {
                indptr,
                indices,
                data,
            },
            obs,
        )
    }

    /// A dense row-major matrix `[n_cells, genes.len()]`; zeros are not stored in the windows.
    pub fn dense(genes: Vec<String>, values: Values<'a>, obs: Option<ObsTable>) -> Result<Self> {
        let g = genes.len().max(1);
        if !values.len().is_multiple_of(g) {
            return Err(PipelineError::option(
                "matrix",
                format!(
                    "{} values are not a whole number of rows of {} genes",
                    values.len(),
                    genes.len()
                ),
            ));
        }
        Self::build(values.len() / g, genes, Layout::Dense(values), obs)
    }

    fn build(
        n_cells: usize,
        genes: Vec<String>,
        layout: Layout<'a>,
        obs: Option<ObsTable>,
    ) -> Result<Self> {
        let obs = obs
            .unwrap_or_else(|| ObsTable::from_names((0..n_cells).map(|i| i.to_string()).collect()));
        if obs.len() != n_cells {
            return Err(PipelineError::option(
                "obs",
                format!("{} cells named for a matrix of {n_cells} cells", obs.len()),
            ));
        }
        Ok(CountsMatrix {
            n_cells,
            genes,
            layout,
            obs,
            label: PathBuf::from("<in-memory matrix>"),
            gene_column: "gene names".into(),
        })
    }

    /// Names the matrix in errors and reports (e.g. `adata.X`, `adata.layers['counts']`) and
    /// says where its gene names came from (e.g. `var_names`, `var['feature_name']`).
    pub fn with_label(mut self, label: impl Into<PathBuf>, gene_column: impl Into<String>) -> Self {
        self.label = label.into();
        self.gene_column = gene_column.into();
        self
    }

    /// Cells (rows).
    pub fn n_cells(&self) -> usize {
        self.n_cells
    }

    /// The gene names (columns).
    pub fn genes(&self) -> &[String] {
        &self.genes
    }

    /// The `obs` table.
    pub fn obs(&self) -> &ObsTable {
        &self.obs
    }

    /// A reader of the matrix in windows, from the first cell.
    pub fn source(&self) -> MatrixSource<'_, 'a> {
        MatrixSource { m: self, next: 0 }
    }
}

/// [`CellSource`] over a [`CountsMatrix`].
#[derive(Debug)]
pub struct MatrixSource<'m, 'a> {
    m: &'m CountsMatrix<'a>,
    next: usize,
}

impl CellSource for MatrixSource<'_, '_> {
    fn path(&self) -> &Path {
        &self.m.label
    }
    fn n_cells(&self) -> usize {
        self.m.n_cells
    }
    fn gene_names(&self) -> &[String] {
        &self.m.genes
    }
    fn gene_column(&self) -> &str {
        &self.m.gene_column
    }
    fn obs(&self) -> &ObsTable {
        &self.m.obs
    }
    fn next_chunk(
        &mut self,
        max_cells: usize,
    ) -> std::result::Result<Option<CsrChunk>, TokenizeError> {
        let (start, n) = (self.next, self.m.n_cells);
        if start >= n {
            return Ok(None);
        }
        let end = (start + max_cells.max(1)).min(n);
        let mut chunk = CsrChunk {
            first_cell: start,
            indptr: vec![0],
            ..Default::default()
        };
        match self.m.layout {
            Layout::Csr {
                indptr,
                indices,
                data,
            } => {
                for i in start..end {
                    for k in indptr.get(i)..indptr.get(i + 1) {
                        chunk.indices.push(indices.get(k) as u32);
                        chunk.data.push(data.get(k));
                    }
                    chunk.indptr.push(chunk.data.len());
                }
            }
            Layout::Dense(values) => {
                let g = self.m.genes.len();
                for i in start..end {
                    for j in 0..g {
                        let v = values.get(i * g + j);
                        if v != 0.0 {
                            chunk.indices.push(j as u32);
                            chunk.data.push(v);
                        }
                    }
                    chunk.indptr.push(chunk.data.len());
                }
            }
        }
        self.next = end;
        Ok(Some(chunk))
    }
}
