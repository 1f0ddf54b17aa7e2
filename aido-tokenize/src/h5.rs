//! The one place that talks to the HDF5 library (`hdf5-pure`): every error comes back as a
//! [`TokenizeError`] naming the file and the object. Swapping the HDF5 backend means
//! changing this file only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, ChunkCacheConfig, DType, Dataset, File, FileAccessProperties};

use crate::error::{Result, TokenizeError};
use crate::source::CsrChunk;

/// An HDF5 file opened for reading, with its path kept for error messages.
pub struct H5 {
    file: File,
    path: PathBuf,
}

/// Element class of a numeric dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumKind {
    /// Floating point.
    Float,
    /// Signed integer.
    Int,
    /// Unsigned integer.
    UInt,
    /// Boolean (HDF5 enum of FALSE/TRUE, as h5py writes `bool`).
    Bool,
}

impl H5 {
    /// Opens `path`. Data are fetched lazily, so memory follows what is read, not the file size.
    pub fn open(path: &Path) -> Result<H5> {
        if !path.exists() {
            return Err(TokenizeError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let is = hdf5_pure::is_hdf5(path).map_err(|e| TokenizeError::io(path, e))?;
        if !is {
            return Err(TokenizeError::NotHdf5 {
                path: path.to_path_buf(),
                detail: "no HDF5 signature".into(),
            });
        }
        // A larger chunk cache than the default 1 MiB keeps sequential range reads from
        // decompressing the same chunk again when a file has big chunks.
        let props = FileAccessProperties::new()
            .with_chunk_cache(ChunkCacheConfig::new().with_max_bytes(64 << 20));
        let file =
            File::open_streaming_with_options(path, props).map_err(|e| TokenizeError::NotHdf5 {
                path: path.to_path_buf(),
                detail: format!("{e} (truncated or corrupt?)"),
            })?;
        let (eof, size) = (file.superblock().eof_address, file.file_size());
        if eof > size {
            return Err(TokenizeError::NotHdf5 {
                path: path.to_path_buf(),
                detail: format!(
                    "the file is truncated: {size} bytes, but HDF5 says it ends at byte {eof}"
                ),
            });
        }
        Ok(H5 {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, object: &str, e: impl std::fmt::Display) -> TokenizeError {
        TokenizeError::Hdf5 {
            path: self.path.clone(),
            object: object.to_string(),
            detail: e.to_string(),
        }
    }

    /// A typed "missing" error for `object`.
    pub fn missing(&self, object: &str, hint: impl Into<String>) -> TokenizeError {
        let hint = hint.into();
        TokenizeError::Missing {
            path: self.path.clone(),
            object: object.to_string(),
            hint: if hint.is_empty() {
                hint
            } else {
                format!("; {hint}")
            },
        }
    }

    /// Whether `object` is a group.
    pub fn is_group(&self, object: &str) -> bool {
        self.file.group(object).is_ok()
    }

    /// Whether `object` is a dataset.
    pub fn is_dataset(&self, object: &str) -> bool {
        self.file.dataset(object).is_ok()
    }

    /// Names of the member groups and datasets of group `object` (`""` or `"/"` = root).
    pub fn members(&self, object: &str) -> Result<(Vec<String>, Vec<String>)> {
        let g = if object.is_empty() || object == "/" {
            self.file.root()
        } else {
            self.file
                .group(object)
                .map_err(|_| self.missing(object, ""))?
        };
        let groups = g.groups().map_err(|e| self.err(object, e))?;
        let datasets = g.datasets().map_err(|e| self.err(object, e))?;
        Ok((groups, datasets))
    }

    /// Attributes of a group or dataset.
    pub fn attrs(&self, object: &str) -> Result<HashMap<String, AttrValue>> {
        if object.is_empty() || object == "/" {
            return self.file.root().attrs().map_err(|e| self.err("/", e));
        }
        if let Ok(g) = self.file.group(object) {
            return g.attrs().map_err(|e| self.err(object, e));
        }
        let d = self.dataset(object)?;
        d.attrs().map_err(|e| self.err(object, e))
    }

    /// A string attribute, if present and a string.
    pub fn attr_string(&self, object: &str, name: &str) -> Result<Option<String>> {
        Ok(self.attrs(object)?.get(name).and_then(attr_as_string))
    }

    /// A dataset handle.
    pub fn dataset(&self, object: &str) -> Result<Dataset> {
        self.file
            .dataset(object)
            .map_err(|_| self.missing(object, ""))
    }

    /// Shape of a dataset.
    pub fn shape(&self, object: &str) -> Result<Vec<usize>> {
        let d = self.dataset(object)?;
        let s = d.shape().map_err(|e| self.err(object, e))?;
        Ok(s.into_iter().map(|x| x as usize).collect())
    }

    /// The numeric class of a dataset, or an "unsupported" error naming its type.
    pub fn num_kind(&self, object: &str) -> Result<NumKind> {
        let d = self.dataset(object)?;
        let t = d.dtype().map_err(|e| self.err(object, e))?;
        Ok(match t {
            DType::F32 | DType::F64 => NumKind::Float,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => NumKind::Int,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => NumKind::UInt,
            DType::Enum(ref names) if names.iter().any(|n| n.eq_ignore_ascii_case("true")) => {
                NumKind::Bool
            }
            other => {
                return Err(TokenizeError::UnsupportedEncoding {
                    path: self.path.clone(),
                    object: object.to_string(),
                    encoding: format!("datatype {other}"),
                    hint: "; expected a numeric dataset".into(),
                });
            }
        })
    }

    /// Elements `[start, start + n)` of the first dimension of a dataset, as f32
    /// (for a 2-D dataset: whole rows, row-major). Errors if fewer elements exist.
    pub fn read_f32_rows(
        &self,
        object: &str,
        start: usize,
        n: usize,
        row_len: usize,
    ) -> Result<Vec<f32>> {
        let d = self.dataset(object)?;
        let v = d
            .read_f32_rows(start as u64, n as u64)
            .map_err(|e| self.err(object, e))?;
        self.check_len(object, v.len(), n * row_len, start)?;
        Ok(v)
    }

    /// Elements `[start, start + n)` of a 1-D integer dataset as u64; negative values are errors.
    pub fn read_index_rows(&self, object: &str, start: usize, n: usize) -> Result<Vec<u64>> {
        let d = self.dataset(object)?;
        let v = d
            .read_i64_rows(start as u64, n as u64)
            .map_err(|e| self.err(object, e))?;
        self.check_len(object, v.len(), n, start)?;
        v.into_iter()
            .map(|x| u64::try_from(x).map_err(|_| self.err(object, format!("negative index {x}"))))
            .collect()
    }

    /// A whole 1-D dataset as f64.
    pub fn read_f64_all(&self, object: &str) -> Result<Vec<f64>> {
        self.dataset(object)?
            .read_f64()
            .map_err(|e| self.err(object, e))
    }

    /// A whole 1-D integer dataset as i64.
    pub fn read_i64_all(&self, object: &str) -> Result<Vec<i64>> {
        self.dataset(object)?
            .read_i64()
            .map_err(|e| self.err(object, e))
    }

    /// A whole 1-D boolean dataset (h5py enum or u8).
    pub fn read_bool_all(&self, object: &str) -> Result<Vec<bool>> {
        let d = self.dataset(object)?;
        let raw = d.read_raw().map_err(|e| self.err(object, e))?;
        let size = d.element_size().map_err(|e| self.err(object, e))? as usize;
        if size == 0 {
            return Err(self.err(object, "zero-size elements"));
        }
        Ok(raw
            .chunks(size)
            .map(|c| c.iter().any(|&b| b != 0))
            .collect())
    }

    /// A whole 1-D string dataset (variable-length or fixed-length, UTF-8 or ASCII).
    pub fn read_strings(&self, object: &str) -> Result<Vec<String>> {
        let d = self.dataset(object)?;
        let v = d.read_string().map_err(|e| self.err(object, e))?;
        Ok(v.into_iter()
            .map(|s| s.trim_end_matches('\0').to_string())
            .collect())
    }

    /// Rows `[start, start + n)` of a compressed matrix stored as `{group}/indptr`,
    /// `{group}/indices`, `{group}/data` (CSR over cells, or 10x's CSC over cells), with every
    /// minor index checked against `n_minor`.
    pub fn read_compressed_window(
        &self,
        group: &str,
        start: usize,
        n: usize,
        n_minor: usize,
    ) -> Result<CsrChunk> {
        let ptr = self.read_index_rows(&format!("{group}/indptr"), start, n + 1)?;
        if ptr.windows(2).any(|w| w[0] > w[1]) {
            return Err(TokenizeError::ShapeMismatch {
                path: self.path.clone(),
                object: format!("{group}/indptr"),
                detail: format!("indptr decreases within cells {start}..{}", start + n),
            });
        }
        let (a, b) = (ptr[0] as usize, ptr[n] as usize);
        let idx = self.read_index_rows(&format!("{group}/indices"), a, b - a)?;
        let data = self.read_f32_rows(&format!("{group}/data"), a, b - a, 1)?;
        let mut indices = Vec::with_capacity(idx.len());
        for j in idx {
            if j as usize >= n_minor {
                return Err(TokenizeError::ShapeMismatch {
                    path: self.path.clone(),
                    object: format!("{group}/indices"),
                    detail: format!(
                        "gene index {j} outside {n_minor} genes (cells {start}..{})",
                        start + n
                    ),
                });
            }
            indices.push(j as u32);
        }
        Ok(CsrChunk {
            first_cell: start,
            indptr: ptr.iter().map(|&p| p as usize - a).collect(),
            indices,
            data,
        })
    }

    fn check_len(&self, object: &str, got: usize, want: usize, start: usize) -> Result<()> {
        if got != want {
            return Err(TokenizeError::ShapeMismatch {
                path: self.path.clone(),
                object: object.to_string(),
                detail: format!(
                    "asked for {want} values from offset {start}, the dataset holds only {got} there"
                ),
            });
        }
        Ok(())
    }
}

/// A string-valued attribute as a `String` (any HDF5 string encoding).
pub fn attr_as_string(v: &AttrValue) -> Option<String> {
    match v {
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s)
        | AttrValue::StringSized { value: s, .. }
        | AttrValue::AsciiStringSized { value: s, .. } => Some(s.clone()),
        AttrValue::StringArray(a) | AttrValue::VarLenStringArray(a) if a.len() == 1 => {
            Some(a[0].clone())
        }
        _ => None,
    }
}

/// A string-array attribute (e.g. `column-order`) as `Vec<String>`; an empty numeric array
/// (as anndata writes an empty `column-order`) is an empty list.
pub fn attr_as_strings(v: &AttrValue) -> Option<Vec<String>> {
    match v {
        AttrValue::StringArray(a)
        | AttrValue::VarLenStringArray(a)
        | AttrValue::AsciiStringArray(a)
        | AttrValue::VarLenAsciiStringArray(a)
        | AttrValue::StringArraySized { values: a, .. }
        | AttrValue::AsciiStringArraySized { values: a, .. } => Some(a.clone()),
        AttrValue::F64Array(a) if a.is_empty() => Some(Vec::new()),
        other => attr_as_string(other).map(|s| vec![s]),
    }
}

/// An integer-array attribute (e.g. `shape`) as `Vec<u64>`.
pub fn attr_as_u64s(v: &AttrValue) -> Option<Vec<u64>> {
    match v {
        AttrValue::I64Array(a) => a.iter().map(|&x| u64::try_from(x).ok()).collect(),
        AttrValue::I32Array(a) => a.iter().map(|&x| u64::try_from(x).ok()).collect(),
        AttrValue::U64Array(a) => Some(a.clone()),
        AttrValue::U32Array(a) => Some(a.iter().map(|&x| x as u64).collect()),
        AttrValue::I64(x) => u64::try_from(*x).ok().map(|x| vec![x]),
        _ => None,
    }
}

/// A boolean-ish attribute (numpy `bool_` arrives as an integer or enum) as `bool`.
pub fn attr_as_bool(v: &AttrValue) -> bool {
    match v {
        AttrValue::U8(x) => *x != 0,
        AttrValue::I8(x) => *x != 0,
        AttrValue::I16(x) => *x != 0,
        AttrValue::I32(x) => *x != 0,
        AttrValue::I64(x) => *x != 0,
        AttrValue::U16(x) => *x != 0,
        AttrValue::U32(x) => *x != 0,
        AttrValue::U64(x) => *x != 0,
        other => attr_as_string(other).is_some_and(|s| s.eq_ignore_ascii_case("true")),
    }
}
