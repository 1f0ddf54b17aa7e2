//! Writing a new AnnData file (encodings of anndata ≥ 0.8, read back by `anndata.read_h5ad`).
//!
//! The file is assembled in memory and written under a temporary name, then renamed: a failed
//! run never leaves a partial file, and the input is never modified.

use std::path::Path;

use hdf5_pure::{
    AttrValue, DatasetBuilder, EnumTypeBuilder, FileBuilder, GroupBuilder, make_i8_type,
};
use ndarray::Array2;

use crate::error::{Result, TokenizeError};
use crate::io_util::write_bytes_atomically;
use crate::source::{CsrChunk, ObsColumn, ObsTable};

/// The main matrix of the file.
#[derive(Debug, Clone)]
pub enum XMatrix {
    /// Cells × genes CSR with `n_cols` columns.
    Csr {
        /// The rows (all cells).
        csr: CsrChunk,
        /// Number of columns.
        n_cols: usize,
    },
    /// A dense matrix.
    Dense(Array2<f32>),
}

/// An AnnData file to write.
#[derive(Debug, Clone)]
pub struct H5adWriter {
    /// Cells: names and annotation columns.
    pub obs: ObsTable,
    /// Variable names (genes, or embedding dimensions).
    pub var_names: Vec<String>,
    /// `var` annotation columns, one value per variable.
    pub var_columns: Vec<(String, ObsColumn)>,
    /// The main matrix `[n_obs, n_var]`, or none.
    pub x: Option<XMatrix>,
    /// Named `[n_obs, n_var]` matrices stored in `layers`.
    pub layers: Vec<(String, XMatrix)>,
    /// Named `[n_obs, k]` matrices stored in `obsm`.
    pub obsm: Vec<(String, Array2<f32>)>,
    /// Entries stored in `uns` (the same model as [`H5adAdditions::uns`](crate::h5ad_edit::H5adAdditions):
    /// strings, numbers, arrays and nested dicts in anndata's encodings).
    pub uns: Vec<(String, crate::h5ad_edit::UnsValue)>,
}

pub(crate) fn s(v: &str) -> AttrValue {
    AttrValue::VarLenString(v.into())
}

/// Keeps every chunk dimension ≤ 65,535 (larger chunk dimensions are not read by libhdf5
/// when written by hdf5-pure) and chunks of about a mebibyte.
pub(crate) fn chunk_1d(n: usize) -> u64 {
    n.clamp(1, 65_535) as u64
}

pub(crate) fn tag(d: &mut DatasetBuilder, enc: &str, ver: &str) {
    d.set_attr("encoding-type", s(enc))
        .set_attr("encoding-version", s(ver));
}

fn strings(g: &mut GroupBuilder, name: &str, values: &[String]) {
    fill_strings(g.create_dataset(name), values, true);
}

/// A `string-array` dataset of `values` (chunked and compressed, or contiguous: the in-place
/// editor cannot add chunked variable-length strings).
pub(crate) fn fill_strings(d: &mut DatasetBuilder, values: &[String], chunked: bool) {
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    d.with_vlen_strings(&refs);
    if chunked && !values.is_empty() {
        d.with_chunks(&[chunk_1d(values.len().min(4096))])
            .with_deflate(4);
    }
    tag(d, "string-array", "0.2.0");
}

/// Categorical codes in the narrowest signed type anndata would use.
pub(crate) fn fill_codes(d: &mut DatasetBuilder, codes: &[i32], n_categories: usize) {
    if n_categories < 128 {
        let v: Vec<i8> = codes.iter().map(|&x| x as i8).collect();
        d.with_i8_data(&v);
    } else if n_categories < 32_768 {
        let v: Vec<i16> = codes.iter().map(|&x| x as i16).collect();
        d.with_i16_data(&v);
    } else {
        d.with_i32_data(codes);
    }
    if !codes.is_empty() {
        d.with_chunks(&[chunk_1d(codes.len().min(65_535))])
            .with_deflate(4);
    }
    tag(d, "array", "0.2.0");
}

/// A boolean enum type as h5py writes `bool`.
pub(crate) fn bool_type() -> Result<hdf5_pure::Datatype> {
    EnumTypeBuilder::with_base(make_i8_type())
        .value("FALSE", 0)
        .value("TRUE", 1)
        .build()
        .map_err(|e| TokenizeError::InvalidArgument(format!("boolean type: {e}")))
}

/// A dense `array` dataset (`[n, k]` f32, chunked and compressed).
pub(crate) fn dense(d: &mut DatasetBuilder, m: &Array2<f32>) {
    let (n, k) = m.dim();
    let data: Vec<f32> = m.iter().copied().collect();
    d.with_f32_data(&data).with_shape(&[n as u64, k as u64]);
    if n > 0 && k > 0 {
        let rows = (262_144 / k.max(1)).clamp(1, n.min(65_535));
        d.with_chunks(&[rows as u64, k.min(65_535) as u64])
            .with_deflate(4);
    }
    tag(d, "array", "0.2.0");
}

/// A `csr_matrix` group (anndata's encoding) filled into `g`.
fn csr_group(mut g: GroupBuilder, csr: &CsrChunk, n_cols: usize) -> hdf5_pure::FinishedGroup {
    g.set_attr("encoding-type", s("csr_matrix"));
    g.set_attr("encoding-version", s("0.1.0"));
    g.set_attr(
        "shape",
        AttrValue::I64Array(vec![csr.n_cells() as i64, n_cols as i64]),
    );
    let nnz = csr.data.len();
    let c = chunk_1d(nnz.min(65_535));
    let d = g.create_dataset("data");
    d.with_f32_data(&csr.data);
    if nnz > 0 {
        d.with_chunks(&[c]).with_deflate(4);
    }
    let idx: Vec<i32> = csr.indices.iter().map(|&j| j as i32).collect();
    let d = g.create_dataset("indices");
    d.with_i32_data(&idx);
    if nnz > 0 {
        d.with_chunks(&[c]).with_deflate(4);
    }
    write_indptr(g.create_dataset("indptr"), &csr.indptr);
    g.finish()
}

/// Writes a CSR `indptr` as scipy and scanpy do: int32 while the number of stored values fits
/// (scipy's `get_index_dtype`), int64 beyond. scipy's `csgraph` routines and scanpy's
/// `tl.paga`, `tl.diffmap`, `tl.umap`, `tl.leiden`, `tl.rank_genes_groups` refuse int64 index
/// arrays on matrices they could have written as int32.
pub(crate) fn write_indptr(d: &mut hdf5_pure::DatasetBuilder, indptr: &[usize]) {
    let chunks = [chunk_1d(indptr.len().min(65_535))];
    if indptr.last().is_none_or(|&n| n <= i32::MAX as usize) {
        let ptr: Vec<i32> = indptr.iter().map(|&p| p as i32).collect();
        d.with_i32_data(&ptr).with_chunks(&chunks).with_deflate(4);
    } else {
        let ptr: Vec<i64> = indptr.iter().map(|&p| p as i64).collect();
        d.with_i64_data(&ptr).with_chunks(&chunks).with_deflate(4);
    }
}

/// One `uns` entry under `g`: a dict as a group (recursively), anything else as a dataset in
/// anndata's encoding (shared with `h5ad_edit`).
fn uns_entry(g: &mut GroupBuilder, key: &str, v: &crate::h5ad_edit::UnsValue) {
    match v {
        crate::h5ad_edit::UnsValue::Dict(items) => {
            let mut sub = g.create_group(key);
            sub.set_attr("encoding-type", s("dict"));
            sub.set_attr("encoding-version", s("0.1.0"));
            for (k, v) in items {
                uns_entry(&mut sub, k, v);
            }
            g.add_group(sub.finish());
        }
        other => crate::h5ad_edit::scalar_dataset(g.create_dataset(key), other),
    }
}

fn dict(fb: &mut FileBuilder, name: &str) -> GroupBuilder {
    let mut g = fb.create_group(name);
    g.set_attr("encoding-type", s("dict"));
    g.set_attr("encoding-version", s("0.1.0"));
    g
}

fn column(g: &mut GroupBuilder, name: &str, c: &ObsColumn) -> Result<()> {
    match c {
        ObsColumn::Categorical {
            codes,
            categories,
            ordered,
        } => {
            let mut cg = g.create_group(name);
            cg.set_attr("encoding-type", s("categorical"));
            cg.set_attr("encoding-version", s("0.2.0"));
            cg.set_attr("ordered", AttrValue::I8(i8::from(*ordered)));
            fill_codes(cg.create_dataset("codes"), codes, categories.len());
            strings(&mut cg, "categories", categories);
            g.add_group(cg.finish());
        }
        ObsColumn::Float(v) => {
            let d = g.create_dataset(name);
            d.with_f64_data(v);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::Int(v) => {
            let d = g.create_dataset(name);
            d.with_i64_data(v);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::Bool(v) => {
            let t = bool_type()?;
            let bytes: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
            let d = g.create_dataset(name);
            d.with_enum_u8_data(t, &bytes);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::Str(v) => strings(g, name, v),
        ObsColumn::NullableInt { mask, .. }
        | ObsColumn::NullableBool { mask, .. }
        | ObsColumn::NullableStr { mask, .. } => {
            let mut cg = g.create_group(name);
            cg.set_attr("encoding-type", s(nullable_encoding(c)));
            cg.set_attr("encoding-version", s("0.1.0"));
            fill_nullable_values(cg.create_dataset("values"), c)?;
            fill_mask(cg.create_dataset("mask"), mask)?;
            g.add_group(cg.finish());
        }
    }
    Ok(())
}

/// The anndata encoding of a nullable column (`None` for the others).
pub(crate) fn nullable_encoding(c: &ObsColumn) -> &'static str {
    match c {
        ObsColumn::NullableInt { .. } => "nullable-integer",
        ObsColumn::NullableBool { .. } => "nullable-boolean",
        _ => "nullable-string-array",
    }
}

/// The `values` dataset of a nullable column, tagged as anndata 0.12 writes it.
pub(crate) fn fill_nullable_values(d: &mut DatasetBuilder, c: &ObsColumn) -> Result<()> {
    match c {
        ObsColumn::NullableInt { values, .. } => {
            d.with_i64_data(values);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::NullableBool { values, .. } => {
            let bytes: Vec<u8> = values.iter().map(|&b| u8::from(b)).collect();
            d.with_enum_u8_data(bool_type()?, &bytes);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::NullableStr { values, .. } => {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            d.with_vlen_strings(&refs);
            tag(d, "string-array", "0.2.0");
        }
        _ => {
            return Err(TokenizeError::InvalidArgument(
                "internal: not a nullable column".into(),
            ));
        }
    }
    Ok(())
}

/// The boolean `mask` dataset of a nullable column (`true` = missing).
pub(crate) fn fill_mask(d: &mut DatasetBuilder, mask: &[bool]) -> Result<()> {
    let bytes: Vec<u8> = mask.iter().map(|&b| u8::from(b)).collect();
    d.with_enum_u8_data(bool_type()?, &bytes);
    tag(d, "array", "0.2.0");
    Ok(())
}

fn dataframe(
    fb: &mut FileBuilder,
    name: &str,
    index_name: &str,
    index: &[String],
    cols: &[(String, ObsColumn)],
) -> Result<()> {
    let mut g = fb.create_group(name);
    g.set_attr("encoding-type", s("dataframe"));
    g.set_attr("encoding-version", s("0.2.0"));
    g.set_attr("_index", s(index_name));
    g.set_attr(
        "column-order",
        AttrValue::VarLenStringArray(cols.iter().map(|(n, _)| n.clone()).collect()),
    );
    strings(&mut g, index_name, index);
    for (n, c) in cols {
        if n == index_name || n.contains('/') {
            return Err(TokenizeError::InvalidArgument(format!(
                "cannot write {name} column '{n}'"
            )));
        }
        column(&mut g, n, c)?;
    }
    fb.add_group(g.finish());
    Ok(())
}

impl H5adWriter {
    /// A writer with the given cells and variables and nothing else.
    pub fn new(obs: ObsTable, var_names: Vec<String>) -> Self {
        H5adWriter {
            obs,
            var_names,
            var_columns: Vec::new(),
            x: None,
            layers: Vec::new(),
            obsm: Vec::new(),
            uns: Vec::new(),
        }
    }

    fn check(&self) -> Result<()> {
        let n = self.obs.len();
        for (name, c) in &self.obs.columns {
            if c.len() != n {
                return Err(TokenizeError::InvalidArgument(format!(
                    "obs column '{name}' has {} values for {n} cells",
                    c.len()
                )));
            }
        }
        for (name, c) in &self.var_columns {
            if c.len() != self.var_names.len() {
                return Err(TokenizeError::InvalidArgument(format!(
                    "var column '{name}' has {} values for {} variables",
                    c.len(),
                    self.var_names.len()
                )));
            }
        }
        match &self.x {
            Some(XMatrix::Csr { csr, n_cols })
                if csr.n_cells() != n || *n_cols != self.var_names.len() =>
            {
                return Err(TokenizeError::InvalidArgument(format!(
                    "X is {}×{n_cols}, obs × var is {n}×{}",
                    csr.n_cells(),
                    self.var_names.len()
                )));
            }
            Some(XMatrix::Dense(m)) if m.dim() != (n, self.var_names.len()) => {
                return Err(TokenizeError::InvalidArgument(format!(
                    "X is {:?}, obs × var is {n}×{}",
                    m.dim(),
                    self.var_names.len()
                )));
            }
            _ => {}
        }
        for (k, m) in &self.layers {
            let dims = match m {
                XMatrix::Csr { csr, n_cols } => (csr.n_cells(), *n_cols),
                XMatrix::Dense(m) => m.dim(),
            };
            if dims != (n, self.var_names.len()) {
                return Err(TokenizeError::InvalidArgument(format!(
                    "layer '{k}' is {}×{}, obs × var is {n}×{}",
                    dims.0,
                    dims.1,
                    self.var_names.len()
                )));
            }
        }
        for (k, m) in &self.obsm {
            if m.nrows() != n {
                return Err(TokenizeError::InvalidArgument(format!(
                    "obsm '{k}' has {} rows for {n} cells",
                    m.nrows()
                )));
            }
        }
        Ok(())
    }

    /// Serializes the file to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut fb = FileBuilder::new();
        fb.set_attr("encoding-type", s("anndata"));
        fb.set_attr("encoding-version", s("0.1.0"));
        match &self.x {
            Some(XMatrix::Csr { csr, n_cols }) => {
                let g = fb.create_group("X");
                fb.add_group(csr_group(g, csr, *n_cols));
            }
            Some(XMatrix::Dense(m)) => dense(fb.create_dataset("X"), m),
            None => {}
        }
        dataframe(
            &mut fb,
            "obs",
            &self.obs.index_name,
            &self.obs.names,
            &self.obs.columns,
        )?;
        dataframe(&mut fb, "var", "_index", &self.var_names, &self.var_columns)?;
        let mut obsm = dict(&mut fb, "obsm");
        for (k, m) in &self.obsm {
            dense(obsm.create_dataset(k), m);
        }
        fb.add_group(obsm.finish());
        let mut uns = dict(&mut fb, "uns");
        for (k, v) in &self.uns {
            uns_entry(&mut uns, k, v);
        }
        fb.add_group(uns.finish());
        let mut layers = dict(&mut fb, "layers");
        for (k, m) in &self.layers {
            match m {
                XMatrix::Csr { csr, n_cols } => {
                    let g = layers.create_group(k);
                    layers.add_group(csr_group(g, csr, *n_cols));
                }
                XMatrix::Dense(m) => dense(layers.create_dataset(k), m),
            }
        }
        fb.add_group(layers.finish());
        for name in ["obsp", "varm", "varp"] {
            let g = dict(&mut fb, name);
            fb.add_group(g.finish());
        }
        fb.finish()
            .map_err(|e| TokenizeError::InvalidArgument(format!("building the h5ad file: {e}")))
    }

    /// Writes the file atomically to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_bytes_atomically(path.as_ref(), &bytes)
    }
}
