//! The user's h5ad file plus results: the input is copied whole (X, layers, raw, var, obs,
//! obsm, obsp, varm, uns, anything else), then the new entries are added in place with
//! `hdf5-pure`'s editor, and the copy is renamed onto the output. An existing entry of the
//! same name is replaced (as scanpy overwrites `X_pca`); new `obs`/`var` columns are
//! appended to the dataframe's `column-order`. Everything is validated before the first byte
//! is written; on any error the temporary copy is removed and nothing appears under the
//! output name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, DatasetBuilder, File};
use ndarray::Array2;

use crate::error::{Result, TokenizeError};
use crate::h5::{H5, attr_as_strings};
use crate::h5ad_out::{
    bool_type, chunk_1d, dense, fill_codes, fill_mask, fill_nullable_values, fill_strings,
    nullable_encoding, s, tag,
};
use crate::io_util::temp_sibling;
use crate::source::ObsColumn;

/// A square or rectangular CSR matrix for `obsp` (anndata `csr_matrix`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseCsr {
    /// Rows.
    pub n_rows: usize,
    /// Columns.
    pub n_cols: usize,
    /// Row pointers (`n_rows + 1`).
    pub indptr: Vec<usize>,
    /// Column indices.
    pub indices: Vec<u32>,
    /// Values.
    pub data: Vec<f32>,
    /// Store `data` as float64 (scanpy's `obsp/distances`) instead of float32 (its
    /// `obsp/connectivities`).
    pub data_f64: bool,
}

/// A value under `uns` (anndata encodings: string, numeric-scalar, array, dict).
#[derive(Debug, Clone, PartialEq)]
pub enum UnsValue {
    /// A string.
    Str(String),
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// A float array.
    F64Array(Vec<f64>),
    /// A string array.
    StrArray(Vec<String>),
    /// A nested mapping.
    Dict(Vec<(String, UnsValue)>),
}

impl From<String> for UnsValue {
    fn from(s: String) -> Self {
        UnsValue::Str(s)
    }
}

impl From<&str> for UnsValue {
    fn from(s: &str) -> Self {
        UnsValue::Str(s.to_string())
    }
}

/// What to add to the input file.
#[derive(Debug, Clone, Default)]
pub struct H5adAdditions {
    /// New (or replaced) `obs` columns, one value per cell.
    pub obs: Vec<(String, ObsColumn)>,
    /// New `var` columns, one value per variable.
    pub var: Vec<(String, ObsColumn)>,
    /// `obsm` matrices `[n_obs, k]`.
    pub obsm: Vec<(String, Array2<f32>)>,
    /// `varm` matrices `[n_vars, k]`.
    pub varm: Vec<(String, Array2<f32>)>,
    /// `obsp` matrices `[n_obs, n_obs]`.
    pub obsp: Vec<(String, SparseCsr)>,
    /// `uns` entries.
    pub uns: Vec<(String, UnsValue)>,
}

fn bad(input: &Path, what: String) -> TokenizeError {
    TokenizeError::InvalidArgument(format!("{}: {what}", input.display()))
}

/// Refuses a key that cannot name an h5ad element of `group` (empty, `.`/`..`, or holding a
/// `/`), naming `input`: callers check the keys they will write before the compute.
pub fn check_key(input: &Path, group: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key == "." || key == ".." {
        return Err(bad(
            input,
            format!("cannot write {group}/'{key}': a key must be non-empty and hold no '/'"),
        ));
    }
    Ok(())
}

/// Length of a dataframe's index, and its column order.
fn frame(h5: &H5, name: &str) -> Result<(usize, Vec<String>)> {
    let index = h5.attr_string(name, "_index")?.ok_or_else(|| {
        h5.missing(
            &format!("{name} (_index attribute)"),
            "not an AnnData ≥ 0.8 dataframe",
        )
    })?;
    let len = h5
        .shape(&format!("{name}/{index}"))?
        .first()
        .copied()
        .unwrap_or(0);
    let order = h5
        .attrs(name)?
        .get("column-order")
        .and_then(attr_as_strings)
        .unwrap_or_default();
    Ok((len, order))
}

fn h5err(path: &Path, object: &str, e: impl std::fmt::Display) -> TokenizeError {
    TokenizeError::Hdf5 {
        path: path.to_path_buf(),
        object: object.to_string(),
        detail: e.to_string(),
    }
}

fn fill_column(d: &mut DatasetBuilder, c: &ObsColumn) -> Result<()> {
    match c {
        ObsColumn::Float(v) => {
            d.with_f64_data(v);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::Int(v) => {
            d.with_i64_data(v);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::Bool(v) => {
            let bytes: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
            d.with_enum_u8_data(bool_type()?, &bytes);
            tag(d, "array", "0.2.0");
        }
        ObsColumn::Str(v) => fill_strings(d, v, false),
        ObsColumn::Categorical { .. }
        | ObsColumn::NullableInt { .. }
        | ObsColumn::NullableBool { .. }
        | ObsColumn::NullableStr { .. } => {
            return Err(TokenizeError::InvalidArgument(
                "internal: a categorical or nullable column is a group".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn scalar_dataset(d: &mut DatasetBuilder, v: &UnsValue) {
    match v {
        UnsValue::Str(x) => {
            d.with_vlen_strings(&[x.as_str()]).with_shape(&[]);
            tag(d, "string", "0.2.0");
        }
        UnsValue::F64(x) => {
            d.with_f64_data(&[*x]).with_shape(&[]);
            tag(d, "numeric-scalar", "0.2.0");
        }
        UnsValue::I64(x) => {
            d.with_i64_data(&[*x]).with_shape(&[]);
            tag(d, "numeric-scalar", "0.2.0");
        }
        UnsValue::Bool(x) => {
            if let Ok(t) = bool_type() {
                d.with_enum_u8_data(t, &[u8::from(*x)]).with_shape(&[]);
            }
            tag(d, "numeric-scalar", "0.2.0");
        }
        UnsValue::F64Array(x) => {
            d.with_f64_data(x);
            tag(d, "array", "0.2.0");
        }
        UnsValue::StrArray(x) => fill_strings(d, x, false),
        UnsValue::Dict(_) => {}
    }
}

/// Stages `value` at `path` (a group for a dict, else a dataset).
fn stage_uns(
    file: &File,
    path: &str,
    value: &UnsValue,
) -> std::result::Result<(), hdf5_pure::Error> {
    let root = file.root();
    match value {
        UnsValue::Dict(items) => {
            root.create_group_with(path, |g| {
                g.set_attr("encoding-type", s("dict"));
                g.set_attr("encoding-version", s("0.1.0"));
            })?;
            for (k, v) in items {
                stage_uns(file, &format!("{path}/{k}"), v)?;
            }
        }
        other => {
            root.create_dataset(path, |d| scalar_dataset(d, other))?;
        }
    }
    Ok(())
}

fn stage_column(
    file: &File,
    path: &str,
    c: &ObsColumn,
) -> Result<std::result::Result<(), hdf5_pure::Error>> {
    let root = file.root();
    Ok(match c {
        ObsColumn::Categorical {
            codes,
            categories,
            ordered,
        } => root
            .create_group_with(path, |g| {
                g.set_attr("encoding-type", s("categorical"));
                g.set_attr("encoding-version", s("0.2.0"));
                g.set_attr("ordered", AttrValue::I8(i8::from(*ordered)));
                g.create_dataset("codes", |d| fill_codes(d, codes, categories.len()));
                g.create_dataset("categories", |d| fill_strings(d, categories, false));
            })
            .map(|_| ()),
        ObsColumn::NullableInt { mask, .. }
        | ObsColumn::NullableBool { mask, .. }
        | ObsColumn::NullableStr { mask, .. } => {
            let mut err = None;
            let r = root.create_group_with(path, |g| {
                g.set_attr("encoding-type", s(nullable_encoding(c)));
                g.set_attr("encoding-version", s("0.1.0"));
                g.create_dataset("values", |d| {
                    if let Err(e) = fill_nullable_values(d, c) {
                        err = Some(e);
                    }
                });
                g.create_dataset("mask", |d| {
                    if let Err(e) = fill_mask(d, mask) {
                        err = Some(e);
                    }
                });
            });
            if let Some(e) = err {
                return Err(e);
            }
            r.map(|_| ())
        }
        other => {
            let mut err = None;
            let r = root.create_dataset(path, |d| {
                if let Err(e) = fill_column(d, other) {
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            r.map(|_| ())
        }
    })
}

/// The groups and their members (`obs/cell_type`, `uns/neighbors`) of an AnnData file.
fn present_entries(h5: &H5) -> Result<BTreeSet<String>> {
    let mut present: BTreeSet<String> = BTreeSet::new();
    for g in ["obs", "var", "obsm", "varm", "obsp", "uns"] {
        if h5.is_group(g) {
            present.insert(g.to_string());
            let (gs, ds) = h5.members(g)?;
            for m in gs.into_iter().chain(ds) {
                present.insert(format!("{g}/{m}"));
            }
        }
    }
    Ok(present)
}

/// The entries of `input` that [`write_input_plus`] with `add` would replace
/// (`obs/aido_leiden`, `uns/neighbors`), in the order of `add`.
pub fn replaced_entries(input: &Path, add: &H5adAdditions) -> Result<Vec<String>> {
    let present = present_entries(&H5::open(input)?)?;
    let names = add
        .obs
        .iter()
        .map(|(k, _)| format!("obs/{k}"))
        .chain(add.var.iter().map(|(k, _)| format!("var/{k}")))
        .chain(add.obsm.iter().map(|(k, _)| format!("obsm/{k}")))
        .chain(add.varm.iter().map(|(k, _)| format!("varm/{k}")))
        .chain(add.obsp.iter().map(|(k, _)| format!("obsp/{k}")))
        .chain(add.uns.iter().map(|(k, _)| format!("uns/{k}")));
    Ok(names.filter(|n| present.contains(n)).collect())
}

/// Copies `input` to `output` and adds `add` (see the module docs). `input` must be an
/// AnnData ≥ 0.8 file; `output` may equal `input` (the file is then replaced atomically).
pub fn write_input_plus(input: &Path, output: &Path, add: &H5adAdditions) -> Result<()> {
    let h5 = H5::open(input)?;
    let (n_obs, obs_order) = frame(&h5, "obs")?;
    let (n_vars, var_order) = frame(&h5, "var")?;
    // validate everything first
    for (k, c) in &add.obs {
        check_key(input, "obs", k)?;
        if c.len() != n_obs {
            return Err(bad(
                input,
                format!("obs column '{k}' has {} values for {n_obs} cells", c.len()),
            ));
        }
    }
    for (k, c) in &add.var {
        check_key(input, "var", k)?;
        if c.len() != n_vars {
            return Err(bad(
                input,
                format!(
                    "var column '{k}' has {} values for {n_vars} variables",
                    c.len()
                ),
            ));
        }
    }
    for (k, m) in &add.obsm {
        check_key(input, "obsm", k)?;
        if m.nrows() != n_obs {
            return Err(bad(
                input,
                format!("obsm '{k}' has {} rows for {n_obs} cells", m.nrows()),
            ));
        }
    }
    for (k, m) in &add.varm {
        check_key(input, "varm", k)?;
        if m.nrows() != n_vars {
            return Err(bad(
                input,
                format!("varm '{k}' has {} rows for {n_vars} variables", m.nrows()),
            ));
        }
    }
    for (k, m) in &add.obsp {
        check_key(input, "obsp", k)?;
        if m.n_rows != n_obs || m.n_cols != n_obs || m.indptr.len() != n_obs + 1 {
            return Err(bad(
                input,
                format!("obsp '{k}' is {}×{} for {n_obs} cells", m.n_rows, m.n_cols),
            ));
        }
    }
    for (k, _) in &add.uns {
        check_key(input, "uns", k)?;
    }
    let present = present_entries(&h5)?;
    drop(h5);

    let tmp: PathBuf = temp_sibling(output);
    let result = (|| -> Result<()> {
        std::fs::copy(input, &tmp).map_err(|e| TokenizeError::io(output, e))?;
        let file = File::open_rw(&tmp)
            .map_err(|e| h5err(output, "/", format!("opening the copy for editing: {e}")))?;
        let root = file.root();
        let fail = |obj: &str, e: hdf5_pure::Error| h5err(output, obj, e);
        for g in ["obsm", "varm", "obsp", "uns"] {
            if !present.contains(g) {
                root.create_group_with(g, |gb| {
                    gb.set_attr("encoding-type", s("dict"));
                    gb.set_attr("encoding-version", s("0.1.0"));
                })
                .map_err(|e| fail(g, e))?;
            }
        }
        let replace = |path: &str| -> Result<()> {
            if present.contains(path) {
                root.delete(path).map_err(|e| h5err(output, path, e))?;
            }
            Ok(())
        };
        for (k, c) in &add.obs {
            let p = format!("obs/{k}");
            replace(&p)?;
            stage_column(&file, &p, c)?.map_err(|e| fail(&p, e))?;
        }
        for (k, c) in &add.var {
            let p = format!("var/{k}");
            replace(&p)?;
            stage_column(&file, &p, c)?.map_err(|e| fail(&p, e))?;
        }
        for (g, items) in [("obsm", &add.obsm), ("varm", &add.varm)] {
            for (k, m) in items {
                let p = format!("{g}/{k}");
                replace(&p)?;
                root.create_dataset(&p, |d| dense(d, m))
                    .map_err(|e| fail(&p, e))?;
            }
        }
        for (k, m) in &add.obsp {
            let p = format!("obsp/{k}");
            replace(&p)?;
            root.create_group_with(&p, |g| {
                g.set_attr("encoding-type", s("csr_matrix"));
                g.set_attr("encoding-version", s("0.1.0"));
                g.set_attr(
                    "shape",
                    AttrValue::I64Array(vec![m.n_rows as i64, m.n_cols as i64]),
                );
                let nnz = m.data.len();
                g.create_dataset("data", |d| {
                    if m.data_f64 {
                        let wide: Vec<f64> = m.data.iter().map(|&x| f64::from(x)).collect();
                        d.with_f64_data(&wide);
                    } else {
                        d.with_f32_data(&m.data);
                    }
                    if nnz > 0 {
                        d.with_chunks(&[chunk_1d(nnz.min(65_535))]).with_deflate(4);
                    }
                });
                let idx: Vec<i32> = m.indices.iter().map(|&j| j as i32).collect();
                g.create_dataset("indices", |d| {
                    d.with_i32_data(&idx);
                    if nnz > 0 {
                        d.with_chunks(&[chunk_1d(nnz.min(65_535))]).with_deflate(4);
                    }
                });
                g.create_dataset("indptr", |d| {
                    crate::h5ad_out::write_indptr(d, &m.indptr);
                });
            })
            .map_err(|e| fail(&p, e))?;
        }
        for (k, v) in &add.uns {
            let p = format!("uns/{k}");
            replace(&p)?;
            stage_uns(&file, &p, v).map_err(|e| fail(&p, e))?;
        }
        for (frame_name, order, cols) in
            [("obs", &obs_order, &add.obs), ("var", &var_order, &add.var)]
        {
            if cols.is_empty() {
                continue;
            }
            let mut order = order.clone();
            for (k, _) in cols {
                if !order.contains(k) {
                    order.push(k.clone());
                }
            }
            let g = file.group(frame_name).map_err(|e| fail(frame_name, e))?;
            g.set_attr("column-order", AttrValue::VarLenStringArray(order))
                .map_err(|e| fail(frame_name, e))?;
        }
        file.commit()
            .map_err(|e| h5err(output, "/", format!("committing the additions: {e}")))?;
        file.close().map_err(|e| fail("/", e))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TokenizeError::io(output, e)
    })
}
