//! What every reader hands on: cells in CSR windows over the file's own genes, plus `obs`.

use std::path::Path;

use crate::error::{Result, TokenizeError};

/// A window of consecutive cells as CSR over the source's genes.
///
/// Cell `i` of the window (input cell `first_cell + i`) owns
/// `indices[indptr[i]..indptr[i+1]]` (gene columns of the source) and the matching `data`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsrChunk {
    /// Input index of the first cell of the window.
    pub first_cell: usize,
    /// Row pointers, `n_cells + 1` entries starting at 0.
    pub indptr: Vec<usize>,
    /// Source gene index of each stored value.
    pub indices: Vec<u32>,
    /// Stored values (counts).
    pub data: Vec<f32>,
}

impl CsrChunk {
    /// Number of cells in the window.
    pub fn n_cells(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// The stored `(gene index, value)` pairs of window row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Dense `[n_cells, n_genes]` copy (tests and small data only).
    pub fn to_dense(&self, n_genes: usize) -> Vec<Vec<f32>> {
        (0..self.n_cells())
            .map(|i| {
                let mut row = vec![0.0; n_genes];
                let (idx, val) = self.row(i);
                for (&j, &v) in idx.iter().zip(val) {
                    row[j as usize] += v;
                }
                row
            })
            .collect()
    }
}

/// One `obs` column, kept in the encoding it had so it can be written back unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsColumn {
    /// A categorical: integer codes (-1 = missing) into `categories`.
    Categorical {
        /// Codes per cell.
        codes: Vec<i32>,
        /// Category labels.
        categories: Vec<String>,
        /// Whether the categories are ordered.
        ordered: bool,
    },
    /// Floating-point values.
    Float(Vec<f64>),
    /// Integer values.
    Int(Vec<i64>),
    /// Boolean values.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
    /// anndata's `nullable-integer` (pandas `Int64`): values, and `mask[i]` = cell `i` missing.
    NullableInt {
        /// Values (meaningless where masked).
        values: Vec<i64>,
        /// `true` where the value is missing.
        mask: Vec<bool>,
    },
    /// anndata's `nullable-boolean` (pandas `boolean`).
    NullableBool {
        /// Values (meaningless where masked).
        values: Vec<bool>,
        /// `true` where the value is missing.
        mask: Vec<bool>,
    },
    /// anndata's `nullable-string-array` (pandas `string` with missing values).
    NullableStr {
        /// Values (meaningless where masked).
        values: Vec<String>,
        /// `true` where the value is missing.
        mask: Vec<bool>,
    },
}

impl ObsColumn {
    /// Number of cells.
    pub fn len(&self) -> usize {
        match self {
            ObsColumn::Categorical { codes, .. } => codes.len(),
            ObsColumn::Float(v) => v.len(),
            ObsColumn::Int(v) => v.len(),
            ObsColumn::Bool(v) => v.len(),
            ObsColumn::Str(v) => v.len(),
            ObsColumn::NullableInt { values, .. } => values.len(),
            ObsColumn::NullableBool { values, .. } => values.len(),
            ObsColumn::NullableStr { values, .. } => values.len(),
        }
    }

    /// Whether cell `i`'s value is missing: a categorical code −1, a NaN float, or a masked
    /// nullable value.
    pub fn is_missing(&self, i: usize) -> bool {
        match self {
            ObsColumn::Categorical { codes, .. } => codes[i] < 0,
            ObsColumn::Float(v) => v[i].is_nan(),
            ObsColumn::NullableInt { mask, .. }
            | ObsColumn::NullableBool { mask, .. }
            | ObsColumn::NullableStr { mask, .. } => mask[i],
            ObsColumn::Int(_) | ObsColumn::Bool(_) | ObsColumn::Str(_) => false,
        }
    }

    /// Whether the column has no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of cell `i` as text (categories resolved; missing = empty string).
    pub fn display(&self, i: usize) -> String {
        match self {
            ObsColumn::Categorical {
                codes, categories, ..
            } => usize::try_from(codes[i])
                .ok()
                .and_then(|c| categories.get(c).cloned())
                .unwrap_or_default(),
            ObsColumn::Float(v) => v[i].to_string(),
            ObsColumn::Int(v) => v[i].to_string(),
            ObsColumn::Bool(v) => v[i].to_string(),
            ObsColumn::Str(v) => v[i].clone(),
            _ if self.is_missing(i) => String::new(),
            ObsColumn::NullableInt { values, .. } => values[i].to_string(),
            ObsColumn::NullableBool { values, .. } => values[i].to_string(),
            ObsColumn::NullableStr { values, .. } => values[i].clone(),
        }
    }

    /// The rows `keep` (in that order).
    pub fn select(&self, keep: &[usize]) -> ObsColumn {
        fn pick<T: Clone>(v: &[T], keep: &[usize]) -> Vec<T> {
            keep.iter().map(|&i| v[i].clone()).collect()
        }
        match self {
            ObsColumn::Categorical {
                codes,
                categories,
                ordered,
            } => ObsColumn::Categorical {
                codes: pick(codes, keep),
                categories: categories.clone(),
                ordered: *ordered,
            },
            ObsColumn::Float(v) => ObsColumn::Float(pick(v, keep)),
            ObsColumn::Int(v) => ObsColumn::Int(pick(v, keep)),
            ObsColumn::Bool(v) => ObsColumn::Bool(pick(v, keep)),
            ObsColumn::Str(v) => ObsColumn::Str(pick(v, keep)),
            ObsColumn::NullableInt { values, mask } => ObsColumn::NullableInt {
                values: pick(values, keep),
                mask: pick(mask, keep),
            },
            ObsColumn::NullableBool { values, mask } => ObsColumn::NullableBool {
                values: pick(values, keep),
                mask: pick(mask, keep),
            },
            ObsColumn::NullableStr { values, mask } => ObsColumn::NullableStr {
                values: pick(values, keep),
                mask: pick(mask, keep),
            },
        }
    }
}

/// The per-cell table: cell names (the `obs` index) and annotation columns in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObsTable {
    /// Name of the index column (`_index` in most h5ad files).
    pub index_name: String,
    /// Cell names.
    pub names: Vec<String>,
    /// Annotation columns, in the file's `column-order`.
    pub columns: Vec<(String, ObsColumn)>,
}

impl ObsTable {
    /// A table with only cell names.
    pub fn from_names(names: Vec<String>) -> Self {
        ObsTable {
            index_name: "_index".into(),
            names,
            columns: Vec::new(),
        }
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ObsColumn> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The rows `keep`, in that order.
    pub fn select(&self, keep: &[usize]) -> ObsTable {
        ObsTable {
            index_name: self.index_name.clone(),
            names: keep.iter().map(|&i| self.names[i].clone()).collect(),
            columns: self
                .columns
                .iter()
                .map(|(n, c)| (n.clone(), c.select(keep)))
                .collect(),
        }
    }

    /// Name of cell `i` for error messages.
    pub fn cell_name(&self, i: usize) -> String {
        self.names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("#{i}"))
    }
}

/// A single-cell count matrix read cell by cell, in windows.
///
/// Implementations keep memory bounded by the window, not by the file, except where a
/// format forbids it (documented on the reader).
pub trait CellSource {
    /// The file or folder being read.
    fn path(&self) -> &Path;
    /// Number of cells.
    fn n_cells(&self) -> usize;
    /// Gene names of the matrix columns, from the chosen column.
    fn gene_names(&self) -> &[String];
    /// Where the gene names came from (e.g. `var/_index`, `var/feature_name`, `features.tsv:2`).
    fn gene_column(&self) -> &str;
    /// The `obs` table.
    fn obs(&self) -> &ObsTable;
    /// Reads the next window of at most `max_cells` cells, or `None` at the end.
    fn next_chunk(&mut self, max_cells: usize) -> Result<Option<CsrChunk>>;
}

/// Reader options common to all formats.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Column of `var` (h5ad) or of the features file (10x/mtx: `name` or `id`) with gene
    /// symbols. `None`: the `var` index (h5ad), `name` (10x, mtx).
    pub gene_column: Option<String>,
    /// Read `layers/<name>` instead of `X` (h5ad only).
    pub layer: Option<String>,
    /// Read `raw/X` with the genes of `raw/var` instead of `X` and `var` (h5ad only; scanpy's
    /// `use_raw`, where scanpy keeps the counts after normalizing X).
    pub raw: bool,
}

/// The input formats the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// AnnData h5ad.
    H5ad,
    /// Cell Ranger HDF5 (`filtered_feature_bc_matrix.h5`).
    TenxH5,
    /// A Matrix Market folder (or a `.mtx[.gz]` file inside one).
    MatrixMarket,
    /// Dense CSV/TSV, cells × genes with a header of gene names.
    Delimited,
}

impl InputFormat {
    /// Guesses the format from the path (extension, or a folder for Matrix Market).
    pub fn detect(path: &Path) -> Result<InputFormat> {
        if !path.exists() {
            return Err(TokenizeError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if path.is_dir() {
            return Ok(InputFormat::MatrixMarket);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".h5ad") {
            Ok(InputFormat::H5ad)
        } else if name.ends_with(".h5") || name.ends_with(".hdf5") {
            Ok(InputFormat::TenxH5)
        } else if name.ends_with(".mtx") {
            Ok(InputFormat::MatrixMarket)
        } else if name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt") {
            Ok(InputFormat::Delimited)
        } else {
            Err(TokenizeError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    }
}

/// Opens any supported input as a [`CellSource`], choosing the reader from the path.
pub fn open_source(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Box<dyn CellSource>> {
    let path = path.as_ref();
    let format = InputFormat::detect(path)?;
    if opts.layer.is_some() && format != InputFormat::H5ad {
        return Err(TokenizeError::InvalidArgument(format!(
            "{}: `layer` applies to h5ad input only",
            path.display()
        )));
    }
    Ok(match format {
        InputFormat::H5ad => Box::new(crate::h5ad::H5adSource::open(path, opts)?),
        InputFormat::TenxH5 => Box::new(crate::tenx::TenxH5Source::open(path, opts)?),
        InputFormat::MatrixMarket => Box::new(crate::mtx::MtxSource::open(path, opts)?),
        InputFormat::Delimited => {
            if opts.gene_column.is_some() {
                return Err(TokenizeError::InvalidArgument(format!(
                    "{}: `gene_column` does not apply to CSV/TSV input (the header holds the genes)",
                    path.display()
                )));
            }
            Box::new(crate::delimited::DelimitedSource::open(path)?)
        }
    })
}

/// Reads a whole source into one chunk (tests, small files).
pub fn read_all(source: &mut dyn CellSource) -> Result<CsrChunk> {
    let mut all = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    while let Some(c) = source.next_chunk(4096)? {
        let base = all.data.len();
        all.indices.extend_from_slice(&c.indices);
        all.data.extend_from_slice(&c.data);
        all.indptr.extend(c.indptr[1..].iter().map(|&p| p + base));
    }
    Ok(all)
}
