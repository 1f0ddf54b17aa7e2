//! AnnData `.h5ad` (encodings of anndata ≥ 0.8, i.e. `encoding-type` attributes everywhere).
//!
//! - `X` (or `layers/<name>`) as CSR (`csr_matrix`), CSC (`csc_matrix`) or a dense 2-D array,
//!   stored as f32, f64 or any integer type.
//! - CSR and dense matrices stream in cell windows (three, resp. one, range reads per window).
//!   CSC stores genes contiguously, so a cell window would touch the whole file: a CSC matrix
//!   is transposed into an in-memory CSR once at open (8 bytes per non-zero).
//! - `var`: the index (`_index` attribute) or any column (plain string or categorical) as gene
//!   names; `obs`: index and columns (categorical, string, numeric, boolean) in `column-order`.
//! - Pre-0.7 files (no `encoding-type`, compound `obs`/`var` tables) are refused with a clear
//!   "unsupported" error.

use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};
use crate::h5::{H5, NumKind, attr_as_bool, attr_as_string, attr_as_strings, attr_as_u64s};
use crate::source::{CellSource, CsrChunk, ObsColumn, ObsTable, ReadOptions};

enum Layout {
    Csr,
    Dense,
    Memory {
        indptr: Vec<usize>,
        indices: Vec<u32>,
        data: Vec<f32>,
    },
}

/// An h5ad file as a [`CellSource`].
pub struct H5adSource {
    h5: H5,
    path: PathBuf,
    matrix: String,
    layout: Layout,
    n_cells: usize,
    n_genes: usize,
    genes: Vec<String>,
    column: String,
    obs: ObsTable,
    next_cell: usize,
}

const LEGACY_HINT: &str = "; this looks like a pre-0.7 AnnData file: re-save it with anndata >= 0.8 (anndata.read_h5ad(f).write_h5ad(g))";

fn legacy(h5: &H5, object: &str, encoding: &str) -> TokenizeError {
    TokenizeError::UnsupportedEncoding {
        path: h5.path().to_path_buf(),
        object: object.into(),
        encoding: encoding.into(),
        hint: LEGACY_HINT.into(),
    }
}

/// Reads a string-like column (`string-array` dataset, or a `categorical` group) as strings.
pub(crate) fn read_string_column(h5: &H5, object: &str) -> Result<Vec<String>> {
    match read_obs_column(h5, object)? {
        Some(ObsColumn::Str(v)) => Ok(v),
        Some(c @ ObsColumn::Categorical { .. }) => Ok((0..c.len()).map(|i| c.display(i)).collect()),
        Some(c) => Ok((0..c.len()).map(|i| c.display(i)).collect()),
        None => Err(TokenizeError::UnsupportedEncoding {
            path: h5.path().to_path_buf(),
            object: object.into(),
            encoding: h5
                .attr_string(object, "encoding-type")?
                .unwrap_or_else(|| "(none)".into()),
            hint: "; expected strings or a categorical".into(),
        }),
    }
}

/// The `mask` of a nullable column (`true` = missing), checked against the values' length; a
/// column written without one has no missing values.
fn nullable_mask(h5: &H5, object: &str, n: usize) -> Result<Vec<bool>> {
    let path = format!("{object}/mask");
    if !h5.is_dataset(&path) {
        return Ok(vec![false; n]);
    }
    let mask = h5.read_bool_all(&path)?;
    if mask.len() != n {
        return Err(TokenizeError::ShapeMismatch {
            path: h5.path().to_path_buf(),
            object: path,
            detail: format!("{} mask entries for {n} values", mask.len()),
        });
    }
    Ok(mask)
}

/// Reads one dataframe column in any supported encoding; `None` for encodings we do not copy.
pub(crate) fn read_obs_column(h5: &H5, object: &str) -> Result<Option<ObsColumn>> {
    let enc = h5.attr_string(object, "encoding-type")?;
    if h5.is_group(object) {
        return match enc.as_deref() {
            Some("categorical") => {
                let codes: Vec<i32> = h5
                    .read_i64_all(&format!("{object}/codes"))?
                    .into_iter()
                    .map(|c| c as i32)
                    .collect();
                let cat = format!("{object}/categories");
                let categories = match h5.read_strings(&cat) {
                    Ok(s) => s,
                    Err(_) => h5
                        .read_f64_all(&cat)?
                        .into_iter()
                        .map(|x| x.to_string())
                        .collect(),
                };
                let ordered = h5.attrs(object)?.get("ordered").is_some_and(attr_as_bool);
                Ok(Some(ObsColumn::Categorical {
                    codes,
                    categories,
                    ordered,
                }))
            }
            Some("nullable-integer") => {
                let values = h5.read_i64_all(&format!("{object}/values"))?;
                let mask = nullable_mask(h5, object, values.len())?;
                Ok(Some(ObsColumn::NullableInt { values, mask }))
            }
            Some("nullable-boolean") => {
                let values = h5.read_bool_all(&format!("{object}/values"))?;
                let mask = nullable_mask(h5, object, values.len())?;
                Ok(Some(ObsColumn::NullableBool { values, mask }))
            }
            Some("nullable-string-array") => {
                let values = h5.read_strings(&format!("{object}/values"))?;
                let mask = nullable_mask(h5, object, values.len())?;
                Ok(Some(ObsColumn::NullableStr { values, mask }))
            }
            _ => Ok(None),
        };
    }
    if !h5.is_dataset(object) {
        return Err(h5.missing(object, ""));
    }
    if enc.as_deref() == Some("string-array") {
        return Ok(Some(ObsColumn::Str(h5.read_strings(object)?)));
    }
    if h5.shape(object)?.len() != 1 {
        return Ok(None);
    }
    Ok(match h5.num_kind(object) {
        Ok(NumKind::Float) => Some(ObsColumn::Float(h5.read_f64_all(object)?)),
        Ok(NumKind::Int) | Ok(NumKind::UInt) => Some(ObsColumn::Int(h5.read_i64_all(object)?)),
        Ok(NumKind::Bool) => Some(ObsColumn::Bool(h5.read_bool_all(object)?)),
        Err(_) => h5.read_strings(object).ok().map(ObsColumn::Str),
    })
}

/// Reads a dataframe group: its index and (for `obs`) its columns.
pub(crate) fn read_dataframe(h5: &H5, group: &str, with_columns: bool) -> Result<ObsTable> {
    if h5.is_dataset(group) {
        return Err(legacy(h5, group, "compound table"));
    }
    if !h5.is_group(group) {
        return Err(h5.missing(group, ""));
    }
    let attrs = h5.attrs(group)?;
    let enc = attrs.get("encoding-type").and_then(attr_as_string);
    if enc.as_deref() != Some("dataframe") {
        return Err(legacy(
            h5,
            group,
            enc.as_deref().unwrap_or("(no encoding-type)"),
        ));
    }
    let index_name = attrs
        .get("_index")
        .and_then(attr_as_string)
        .unwrap_or_else(|| "_index".into());
    let names = read_string_column(h5, &format!("{group}/{index_name}"))?;
    let mut columns = Vec::new();
    if with_columns {
        let order = attrs
            .get("column-order")
            .and_then(attr_as_strings)
            .unwrap_or_default();
        for col in order {
            let object = format!("{group}/{col}");
            match read_obs_column(h5, &object)? {
                Some(c) if c.len() == names.len() => columns.push((col, c)),
                Some(c) => {
                    return Err(TokenizeError::ShapeMismatch {
                        path: h5.path().to_path_buf(),
                        object,
                        detail: format!("{} values for {} rows", c.len(), names.len()),
                    });
                }
                None => tracing::warn!(
                    "{}: column '{object}' has an encoding that is not copied",
                    h5.path().display()
                ),
            }
        }
    }
    Ok(ObsTable {
        index_name,
        names,
        columns,
    })
}

impl H5adSource {
    /// Opens an h5ad file.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let h5 = H5::open(path)?;
        let (root_groups, root_datasets) = h5.members("/")?;
        if opts.raw && opts.layer.is_some() {
            return Err(TokenizeError::InvalidArgument(
                "read raw/X or a layer, not both".into(),
            ));
        }
        let matrix = match &opts.layer {
            Some(l) => format!("layers/{l}"),
            None if opts.raw => "raw/X".to_string(),
            None => "X".to_string(),
        };
        let var_group = if opts.raw { "raw/var" } else { "var" };
        if opts.raw && !h5.is_group(&matrix) && !h5.is_dataset(&matrix) {
            return Err(h5.missing(
                &matrix,
                "this file keeps no raw counts in raw/X (scanpy's adata.raw)",
            ));
        }
        let has = |name: &str| root_groups.iter().chain(&root_datasets).any(|n| n == name);
        if opts.layer.is_none() && !has("X") {
            let hint = if h5.is_group("layers") {
                let (g, d) = h5.members("layers")?;
                let all: Vec<String> = g.into_iter().chain(d).collect();
                if all.is_empty() {
                    String::new()
                } else {
                    format!("layers present: {} (use `layer`)", all.join(", "))
                }
            } else {
                String::new()
            };
            return Err(h5.missing("X", hint));
        }
        if opts.layer.is_some() && !h5.is_group(&matrix) && !h5.is_dataset(&matrix) {
            let present = if h5.is_group("layers") {
                let (g, d) = h5.members("layers")?;
                g.into_iter().chain(d).collect::<Vec<_>>().join(", ")
            } else {
                String::new()
            };
            return Err(h5.missing(&matrix, format!("layers present: [{present}]")));
        }

        // Matrix layout and shape.
        let (layout_kind, n_cells, n_genes) = if h5.is_group(&matrix) {
            let attrs = h5.attrs(&matrix)?;
            let enc = attrs.get("encoding-type").and_then(attr_as_string);
            let shape = attrs.get("shape").and_then(attr_as_u64s);
            let kind = match enc.as_deref() {
                Some("csr_matrix") => "csr",
                Some("csc_matrix") => "csc",
                None if attrs.contains_key("h5sparse_format") => {
                    return Err(legacy(&h5, &matrix, "h5sparse_format"));
                }
                None => return Err(legacy(&h5, &matrix, "(no encoding-type)")),
                Some(other) => {
                    return Err(TokenizeError::UnsupportedEncoding {
                        path: path.to_path_buf(),
                        object: matrix.clone(),
                        encoding: other.into(),
                        hint: "; expected csr_matrix, csc_matrix or a dense array".into(),
                    });
                }
            };
            let shape = shape
                .filter(|s| s.len() == 2)
                .ok_or_else(|| h5.missing(&format!("{matrix} attribute 'shape'"), ""))?;
            (kind, shape[0] as usize, shape[1] as usize)
        } else {
            let shape = h5.shape(&matrix)?;
            if shape.len() != 2 {
                return Err(TokenizeError::ShapeMismatch {
                    path: path.to_path_buf(),
                    object: matrix.clone(),
                    detail: format!("a dense matrix must be 2-D, found shape {shape:?}"),
                });
            }
            if let Some(enc) = h5.attr_string(&matrix, "encoding-type")?
                && enc != "array"
            {
                return Err(TokenizeError::UnsupportedEncoding {
                    path: path.to_path_buf(),
                    object: matrix.clone(),
                    encoding: enc,
                    hint: "; expected a dense 'array'".into(),
                });
            }
            ("dense", shape[0], shape[1])
        };

        // var → gene names.
        let var = read_dataframe(&h5, var_group, false)?;
        let (genes, column) = match &opts.gene_column {
            None => (
                var.names.clone(),
                format!("{var_group}/{} (index)", var.index_name),
            ),
            Some(c) if *c == var.index_name => {
                (var.names.clone(), format!("{var_group}/{c} (index)"))
            }
            Some(c) => {
                let object = format!("{var_group}/{c}");
                if !h5.is_group(&object) && !h5.is_dataset(&object) {
                    let (g, d) = h5.members(var_group)?;
                    let cols: Vec<String> = g.into_iter().chain(d).collect();
                    return Err(
                        h5.missing(&object, format!("var columns present: {}", cols.join(", ")))
                    );
                }
                (read_string_column(&h5, &object)?, object)
            }
        };
        if genes.len() != n_genes {
            return Err(TokenizeError::ShapeMismatch {
                path: path.to_path_buf(),
                object: matrix.clone(),
                detail: format!(
                    "the matrix has {n_genes} columns but {column} lists {} genes",
                    genes.len()
                ),
            });
        }
        let obs = read_dataframe(&h5, "obs", true)?;
        if obs.len() != n_cells {
            return Err(TokenizeError::ShapeMismatch {
                path: path.to_path_buf(),
                object: matrix.clone(),
                detail: format!(
                    "the matrix has {n_cells} rows but obs lists {} cells",
                    obs.len()
                ),
            });
        }

        let layout = match layout_kind {
            "dense" => Layout::Dense,
            "csr" => {
                check_compressed(&h5, &matrix, n_cells, n_genes)?;
                Layout::Csr
            }
            _ => {
                let nnz = check_compressed(&h5, &matrix, n_genes, n_cells)?;
                transpose_csc(&h5, &matrix, n_cells, n_genes, nnz)?
            }
        };
        Ok(H5adSource {
            h5,
            path: path.to_path_buf(),
            matrix,
            layout,
            n_cells,
            n_genes,
            genes,
            column,
            obs,
            next_cell: 0,
        })
    }
}

/// Checks the three arrays of a compressed matrix with `n_major` compressed rows and
/// `n_minor` columns; returns nnz.
fn check_compressed(h5: &H5, m: &str, n_major: usize, n_minor: usize) -> Result<usize> {
    let mismatch = |object: String, detail: String| TokenizeError::ShapeMismatch {
        path: h5.path().to_path_buf(),
        object,
        detail,
    };
    for part in ["data", "indices", "indptr"] {
        let object = format!("{m}/{part}");
        if !h5.is_dataset(&object) {
            return Err(h5.missing(&object, ""));
        }
    }
    let indptr_len = h5
        .shape(&format!("{m}/indptr"))?
        .first()
        .copied()
        .unwrap_or(0);
    if indptr_len != n_major + 1 {
        return Err(mismatch(
            format!("{m}/indptr"),
            format!(
                "{indptr_len} entries, expected {} (shape {n_major}+1)",
                n_major + 1
            ),
        ));
    }
    let data_len = h5
        .shape(&format!("{m}/data"))?
        .first()
        .copied()
        .unwrap_or(0);
    let idx_len = h5
        .shape(&format!("{m}/indices"))?
        .first()
        .copied()
        .unwrap_or(0);
    if data_len != idx_len {
        return Err(mismatch(
            format!("{m}/data"),
            format!("{data_len} values but {idx_len} indices"),
        ));
    }
    let first = h5.read_index_rows(&format!("{m}/indptr"), 0, 1)?[0];
    let last = h5.read_index_rows(&format!("{m}/indptr"), n_major, 1)?[0] as usize;
    if first != 0 || last != data_len {
        return Err(mismatch(
            format!("{m}/indptr"),
            format!("indptr runs from {first} to {last}, but there are {data_len} stored values"),
        ));
    }
    let kind = h5.num_kind(&format!("{m}/data"))?;
    if kind == NumKind::Bool {
        return Err(TokenizeError::UnsupportedEncoding {
            path: h5.path().to_path_buf(),
            object: format!("{m}/data"),
            encoding: "boolean".into(),
            hint: "; expected counts".into(),
        });
    }
    let _ = n_minor;
    Ok(data_len)
}

fn transpose_csc(h5: &H5, m: &str, n_cells: usize, n_genes: usize, nnz: usize) -> Result<Layout> {
    let indptr = h5.read_index_rows(&format!("{m}/indptr"), 0, n_genes + 1)?;
    let rows = h5.read_index_rows(&format!("{m}/indices"), 0, nnz)?;
    let vals = h5.read_f32_rows(&format!("{m}/data"), 0, nnz, 1)?;
    let mut counts = vec![0usize; n_cells + 1];
    for &r in &rows {
        let r = r as usize;
        if r >= n_cells {
            return Err(TokenizeError::ShapeMismatch {
                path: h5.path().to_path_buf(),
                object: format!("{m}/indices"),
                detail: format!("row index {r} outside {n_cells} cells"),
            });
        }
        counts[r + 1] += 1;
    }
    for i in 0..n_cells {
        counts[i + 1] += counts[i];
    }
    let mut fill = counts.clone();
    let mut indices = vec![0u32; nnz];
    let mut data = vec![0f32; nnz];
    for g in 0..n_genes {
        let (a, b) = (indptr[g] as usize, indptr[g + 1] as usize);
        if a > b || b > nnz {
            return Err(TokenizeError::ShapeMismatch {
                path: h5.path().to_path_buf(),
                object: format!("{m}/indptr"),
                detail: format!("indptr is not monotone at column {g} ({a} > {b} or beyond {nnz})"),
            });
        }
        for k in a..b {
            let r = rows[k] as usize;
            indices[fill[r]] = g as u32;
            data[fill[r]] = vals[k];
            fill[r] += 1;
        }
    }
    Ok(Layout::Memory {
        indptr: counts,
        indices,
        data,
    })
}

impl CellSource for H5adSource {
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
        let mut chunk = CsrChunk {
            first_cell: start,
            indptr: Vec::with_capacity(n + 1),
            ..Default::default()
        };
        match &self.layout {
            Layout::Csr => {
                chunk = self
                    .h5
                    .read_compressed_window(&self.matrix, start, n, self.n_genes)?;
            }
            Layout::Dense => {
                let vals = self
                    .h5
                    .read_f32_rows(&self.matrix, start, n, self.n_genes)?;
                chunk.indptr.push(0);
                for row in vals.chunks(self.n_genes) {
                    for (j, &v) in row.iter().enumerate() {
                        if v != 0.0 {
                            chunk.indices.push(j as u32);
                            chunk.data.push(v);
                        }
                    }
                    chunk.indptr.push(chunk.data.len());
                }
            }
            Layout::Memory {
                indptr,
                indices,
                data,
            } => {
                let (a, b) = (indptr[start], indptr[end]);
                chunk.indices.extend_from_slice(&indices[a..b]);
                chunk.data.extend_from_slice(&data[a..b]);
                chunk
                    .indptr
                    .extend(indptr[start..=end].iter().map(|p| p - a));
            }
        }
        self.next_cell = end;
        Ok(Some(chunk))
    }
}

/// Reads the `obs` table of an h5ad file without opening its matrix.
pub fn read_obs(path: &Path) -> Result<ObsTable> {
    let h5 = H5::open(path)?;
    read_dataframe(&h5, "obs", true)
}

/// Reads the dense matrix `obsm/<key>` (`[n_obs, k]`, any float or integer type) as f32,
/// checking its row count against `obs`. A missing key is an error listing the keys there.
pub fn read_obsm(path: &Path, key: &str) -> Result<ndarray::Array2<f32>> {
    let h5 = H5::open(path)?;
    let n_obs = read_dataframe(&h5, "obs", false)?.len();
    let object = format!("obsm/{key}");
    if !h5.is_dataset(&object) {
        let mut there: Vec<String> = if h5.is_group("obsm") {
            let (g, d) = h5.members("obsm")?;
            g.into_iter().chain(d).collect()
        } else {
            Vec::new()
        };
        there.sort();
        let hint = if h5.is_group(&object) {
            "it is a group (a sparse matrix or a dataframe): a dense [cells, k] array is needed"
                .to_string()
        } else if there.is_empty() {
            "the file has no obsm entries (run `aido embed` first?)".to_string()
        } else {
            format!("obsm holds: {}", there.join(", "))
        };
        return Err(h5.missing(&object, hint));
    }
    let shape = h5.shape(&object)?;
    if shape.len() != 2 {
        return Err(TokenizeError::ShapeMismatch {
            path: path.to_path_buf(),
            object,
            detail: format!("expected a 2-D [cells, k] array, found shape {shape:?}"),
        });
    }
    if shape[0] != n_obs {
        return Err(TokenizeError::ShapeMismatch {
            path: path.to_path_buf(),
            object,
            detail: format!("{} rows, but obs lists {n_obs} cells", shape[0]),
        });
    }
    h5.num_kind(&object)?;
    let v = h5.read_f32_rows(&object, 0, shape[0], shape[1])?;
    ndarray::Array2::from_shape_vec((shape[0], shape[1]), v).map_err(|e| {
        TokenizeError::ShapeMismatch {
            path: path.to_path_buf(),
            object: format!("obsm/{key}"),
            detail: e.to_string(),
        }
    })
}
