//! A streaming safetensors writer: rows of one f32 matrix are appended as they are produced,
//! so memory stays bounded by a batch; small extra tensors are added at the end.
//!
//! The file layout is the published safetensors format: an 8-byte little-endian header length,
//! a JSON header (padded with spaces), then the raw little-endian tensor bytes. The header is
//! reserved up front for the largest possible row count and rewritten in place at the end,
//! and the file only appears under its final name once complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};
use crate::io_util::temp_sibling;

/// Element types the writer can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// Unsigned byte.
    U8,
    /// 64-bit signed integer.
    I64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::U8 => 1,
            Dtype::I64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::U8 => "U8",
            Dtype::I64 => "I64",
        }
    }
}

/// A small tensor added after the streamed matrix.
#[derive(Debug, Clone)]
pub struct ExtraTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes.
    pub bytes: Vec<u8>,
}

impl ExtraTensor {
    /// Names a tensor that [`SafetensorsRowWriter::finish`] will add, for
    /// [`SafetensorsRowWriter::create`]'s header reservation: only name, type and (largest)
    /// shape matter, no data is held.
    pub fn hint(name: &str, dtype: Dtype, shape: Vec<usize>) -> Self {
        ExtraTensor {
            name: name.into(),
            dtype,
            shape,
            bytes: Vec::new(),
        }
    }
    /// An f32 tensor.
    pub fn f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Self {
        ExtraTensor {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    /// A u8 tensor.
    pub fn u8(name: &str, shape: Vec<usize>, data: &[u8]) -> Self {
        ExtraTensor {
            name: name.into(),
            dtype: Dtype::U8,
            shape,
            bytes: data.to_vec(),
        }
    }
    /// An i64 tensor.
    pub fn i64(name: &str, shape: Vec<usize>, data: &[i64]) -> Self {
        ExtraTensor {
            name: name.into(),
            dtype: Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Streams a `[rows, width]` f32 matrix into a safetensors file.
pub struct SafetensorsRowWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    name: String,
    width: usize,
    max_rows: usize,
    rows: usize,
    header_len: usize,
    metadata: BTreeMap<String, String>,
}

fn header_json(
    name: &str,
    rows: usize,
    width: usize,
    extras: &[(String, Dtype, Vec<usize>, usize)],
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut map = serde_json::Map::new();
    let main_bytes = rows * width * 4;
    map.insert(
        name.to_string(),
        serde_json::json!({"dtype": "F32", "shape": [rows, width], "data_offsets": [0, main_bytes]}),
    );
    let mut off = main_bytes;
    for (n, d, shape, len) in extras {
        map.insert(
            n.clone(),
            serde_json::json!({"dtype": d.name(), "shape": shape, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    if !metadata.is_empty() {
        map.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    serde_json::Value::Object(map).to_string()
}

impl SafetensorsRowWriter {
    /// Starts a file at `path` (written under a temporary name until [`finish`](Self::finish))
    /// for a matrix `name` of `width` columns and at most `max_rows` rows. `extras_hint`
    /// lists the names, types and largest shapes of the tensors that [`finish`](Self::finish)
    /// will add (see [`ExtraTensor::hint`]; their data is not used).
    pub fn create(
        path: impl AsRef<Path>,
        name: &str,
        width: usize,
        max_rows: usize,
        extras_hint: &[ExtraTensor],
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let tmp = temp_sibling(&path);
        // Reserve room for the largest header: the real row count has at most as many digits.
        let extras: Vec<_> = extras_hint
            .iter()
            .map(|e| {
                let len = e.shape.iter().product::<usize>() * e.dtype.size();
                (e.name.clone(), e.dtype, e.shape.clone(), len)
            })
            .collect();
        let worst = header_json(name, max_rows, width, &extras, &metadata);
        let header_len = (worst.len() + 64).div_ceil(8) * 8;
        let file = File::create(&tmp).map_err(|e| TokenizeError::io(&path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let zeros = vec![b' '; 8 + header_len];
        out.write_all(&zeros)
            .map_err(|e| TokenizeError::io(&path, e))?;
        Ok(SafetensorsRowWriter {
            path,
            tmp,
            out: Some(out),
            name: name.into(),
            width,
            max_rows,
            rows: 0,
            header_len,
            metadata,
        })
    }

    /// Appends rows (row-major, a multiple of `width` values).
    pub fn write_rows(&mut self, data: &[f32]) -> Result<()> {
        if !data.len().is_multiple_of(self.width) {
            return Err(TokenizeError::InvalidArgument(format!(
                "internal: {} values is not a whole number of rows of {}",
                data.len(),
                self.width
            )));
        }
        let n = data.len() / self.width;
        if self.rows + n > self.max_rows {
            return Err(TokenizeError::InvalidArgument(format!(
                "internal: more rows ({}) than reserved ({})",
                self.rows + n,
                self.max_rows
            )));
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| TokenizeError::InvalidArgument("writer closed".into()))?;
        let mut buf = Vec::with_capacity(data.len() * 4);
        for v in data {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&buf)
            .map_err(|e| TokenizeError::io(&self.path, e))?;
        self.rows += n;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends `extras`, writes the final header and moves the file to its final name.
    pub fn finish(mut self, extras: &[ExtraTensor]) -> Result<()> {
        let path = self.path.clone();
        let res = (|| -> std::io::Result<()> {
            let mut out = self
                .out
                .take()
                .ok_or_else(|| std::io::Error::other("writer closed"))?;
            for e in extras {
                out.write_all(&e.bytes)?;
            }
            let ex: Vec<_> = extras
                .iter()
                .map(|e| (e.name.clone(), e.dtype, e.shape.clone(), e.bytes.len()))
                .collect();
            let header = header_json(&self.name, self.rows, self.width, &ex, &self.metadata);
            if header.len() > self.header_len {
                return Err(std::io::Error::other(
                    "safetensors header outgrew its reservation",
                ));
            }
            let mut padded = header.into_bytes();
            padded.resize(self.header_len, b' ');
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&(self.header_len as u64).to_le_bytes())?;
            file.write_all(&padded)?;
            file.sync_all()?;
            Ok(())
        })();
        match res.and_then(|_| std::fs::rename(&self.tmp, &self.path)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                Err(TokenizeError::io(path, e))
            }
        }
    }
}

impl Drop for SafetensorsRowWriter {
    fn drop(&mut self) {
        // Not finished (an error or a panic upstream): never leave a partial file behind.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
