//! Matrix Market folders as Cell Ranger writes them: `matrix.mtx[.gz]` (genes × cells,
//! coordinate format), `features.tsv[.gz]` (or the older `genes.tsv`) and `barcodes.tsv[.gz]`.
//!
//! Memory: a first pass counts entries per cell (8 bytes per cell). When the entries are
//! grouped by cell (Cell Ranger's column-major order, the usual case) the second pass streams
//! cell windows; otherwise the matrix is gathered into an in-memory CSR (8 bytes per non-zero).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Result, TokenizeError};
use crate::source::{CellSource, CsrChunk, ObsTable, ReadOptions};

/// Opens a plain or gzip-compressed text file for line reading.
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).map_err(|e| TokenizeError::io(path, e))?;
    let is_gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if is_gz {
        Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

/// Reads all lines of a small text file (plain or gz).
pub(crate) fn read_lines(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for l in open_text(path)?.lines() {
        out.push(l.map_err(|e| TokenizeError::io(path, e))?);
    }
    Ok(out)
}

fn find_first(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Integer,
    Real,
    Pattern,
}

/// One entry of the coordinate list, already oriented as (cell, gene, value).
struct Entries {
    reader: Box<dyn BufRead>,
    path: PathBuf,
    line_no: usize,
    field: Field,
    genes_are_rows: bool,
    n_rows: usize,
    n_cols: usize,
    line: String,
}

impl Entries {
    fn open(path: &Path) -> Result<(Entries, usize)> {
        let mut reader = open_text(path)?;
        let mut line = String::new();
        let mut line_no = 0;
        let bad = |line: usize, detail: String| TokenizeError::Parse {
            path: path.to_path_buf(),
            line,
            detail,
        };
        // Banner.
        line_no += 1;
        reader
            .read_line(&mut line)
            .map_err(|e| TokenizeError::io(path, e))?;
        let banner = line.trim().to_lowercase();
        let parts: Vec<&str> = banner.split_whitespace().collect();
        if parts.first() != Some(&"%%matrixmarket") || parts.get(1) != Some(&"matrix") {
            return Err(bad(
                1,
                format!("not a Matrix Market file (banner '{}')", line.trim()),
            ));
        }
        if parts.get(2) != Some(&"coordinate") {
            return Err(bad(
                1,
                "only the sparse 'coordinate' Matrix Market format is supported".into(),
            ));
        }
        let field = match parts.get(3).copied() {
            Some("integer") => Field::Integer,
            Some("real") | Some("double") => Field::Real,
            Some("pattern") => Field::Pattern,
            other => return Err(bad(1, format!("unsupported field type {other:?}"))),
        };
        if let Some(sym) = parts.get(4)
            && *sym != "general"
        {
            return Err(bad(
                1,
                format!("unsupported symmetry '{sym}' (only 'general')"),
            ));
        }
        // Comments, then the size line.
        loop {
            line.clear();
            line_no += 1;
            let n = reader
                .read_line(&mut line)
                .map_err(|e| TokenizeError::io(path, e))?;
            if n == 0 {
                return Err(bad(line_no, "missing size line".into()));
            }
            if !line.starts_with('%') && !line.trim().is_empty() {
                break;
            }
        }
        let dims: Vec<usize> = line
            .split_whitespace()
            .map(|t| t.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(line_no, format!("bad size line '{}'", line.trim())))?;
        if dims.len() != 3 {
            return Err(bad(line_no, format!("bad size line '{}'", line.trim())));
        }
        // The size line is untrusted: bound it before anything is allocated from it.
        let limit = u32::MAX as usize;
        if dims[0] > limit || dims[1] > limit {
            return Err(bad(
                line_no,
                format!(
                    "size line '{}': more than {limit} rows or columns",
                    line.trim()
                ),
            ));
        }
        if dims[0].checked_mul(dims[1]).is_none_or(|cap| dims[2] > cap) {
            return Err(bad(
                line_no,
                format!(
                    "size line '{}': {} entries cannot fit a {}×{} matrix",
                    line.trim(),
                    dims[2],
                    dims[0],
                    dims[1]
                ),
            ));
        }
        Ok((
            Entries {
                reader,
                path: path.to_path_buf(),
                line_no,
                field,
                genes_are_rows: true,
                n_rows: dims[0],
                n_cols: dims[1],
                line,
            },
            dims[2],
        ))
    }

    /// Next `(cell, gene, value)`, 0-based.
    fn next_entry(&mut self) -> Result<Option<(usize, u32, f32)>> {
        loop {
            self.line.clear();
            self.line_no += 1;
            let n = self
                .reader
                .read_line(&mut self.line)
                .map_err(|e| TokenizeError::io(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            let t = self.line.trim();
            if t.is_empty() || t.starts_with('%') {
                continue;
            }
            let mut it = t.split_ascii_whitespace();
            let bad = |detail: String| TokenizeError::Parse {
                path: self.path.clone(),
                line: self.line_no,
                detail,
            };
            let r: usize = it
                .next()
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad(format!("bad entry '{t}'")))?;
            let c: usize = it
                .next()
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad(format!("bad entry '{t}'")))?;
            let v: f32 = match self.field {
                Field::Pattern => 1.0,
                _ => it
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| bad(format!("bad value in '{t}'")))?,
            };
            if r == 0 || c == 0 || r > self.n_rows || c > self.n_cols {
                return Err(bad(format!(
                    "entry ({r}, {c}) outside the {}×{} matrix",
                    self.n_rows, self.n_cols
                )));
            }
            let (cell, gene) = if self.genes_are_rows {
                (c - 1, r - 1)
            } else {
                (r - 1, c - 1)
            };
            return Ok(Some((cell, gene as u32, v)));
        }
    }
}

enum Mode {
    /// Entries grouped by cell: read on demand.
    Stream { entries: Entries },
    /// Gathered CSR.
    Memory {
        indptr: Vec<usize>,
        indices: Vec<u32>,
        data: Vec<f32>,
    },
}

/// A Matrix Market folder as a [`CellSource`].
pub struct MtxSource {
    path: PathBuf,
    genes: Vec<String>,
    column: String,
    obs: ObsTable,
    counts_per_cell: Vec<usize>,
    mode: Mode,
    next_cell: usize,
}

impl MtxSource {
    /// Opens a folder (or a `matrix.mtx[.gz]` inside one).
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let (dir, matrix) = if path.is_dir() {
            let m = find_first(path, &["matrix.mtx.gz", "matrix.mtx"]).ok_or_else(|| {
                TokenizeError::Missing {
                    path: path.to_path_buf(),
                    object: "matrix.mtx[.gz]".into(),
                    hint: String::new(),
                }
            })?;
            (path.to_path_buf(), m)
        } else {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path.to_path_buf(),
            )
        };
        let features = find_first(
            &dir,
            &[
                "features.tsv.gz",
                "features.tsv",
                "genes.tsv.gz",
                "genes.tsv",
            ],
        )
        .ok_or_else(|| TokenizeError::Missing {
            path: dir.clone(),
            object: "features.tsv[.gz] or genes.tsv".into(),
            hint: String::new(),
        })?;
        let barcodes = find_first(&dir, &["barcodes.tsv.gz", "barcodes.tsv"]);

        // Gene names.
        let feat_lines: Vec<String> = read_lines(&features)?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let col_idx = match opts.gene_column.as_deref() {
            None | Some("name") | Some("gene_symbols") => 1,
            Some("id") | Some("gene_ids") => 0,
            Some(other) => other.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).ok_or_else(|| {
                TokenizeError::InvalidArgument(format!(
                    "{}: `gene_column` for a features file is 'name', 'id' or a 1-based column number, not '{other}'",
                    features.display()
                ))
            })?,
        };
        let mut genes = Vec::with_capacity(feat_lines.len());
        for (i, l) in feat_lines.iter().enumerate() {
            let fields: Vec<&str> = l.split('\t').collect();
            // One-column files hold only names.
            let f = if fields.len() == 1 {
                fields[0]
            } else {
                fields.get(col_idx).copied().unwrap_or("")
            };
            if f.is_empty() {
                return Err(TokenizeError::Parse {
                    path: features.clone(),
                    line: i + 1,
                    detail: format!("no column {} in '{l}'", col_idx + 1),
                });
            }
            genes.push(f.to_string());
        }
        let column = format!(
            "{}:column {}",
            features.file_name().unwrap_or_default().to_string_lossy(),
            col_idx + 1
        );

        // Orientation and per-cell counts (pass 1).
        let (mut entries, nnz) = Entries::open(&matrix)?;
        let (n_rows, n_cols) = (entries.n_rows, entries.n_cols);
        entries.genes_are_rows = if n_rows == genes.len() {
            true
        } else if n_cols == genes.len() {
            false
        } else {
            return Err(TokenizeError::ShapeMismatch {
                path: matrix.clone(),
                object: "matrix.mtx".into(),
                detail: format!(
                    "the matrix is {n_rows}×{n_cols}, but {} lists {} genes",
                    features.display(),
                    genes.len()
                ),
            });
        };
        let n_cells = if entries.genes_are_rows {
            n_cols
        } else {
            n_rows
        };
        let genes_are_rows = entries.genes_are_rows;
        let mut counts_per_cell: Vec<usize> = Vec::new();
        counts_per_cell
            .try_reserve_exact(n_cells)
            .map_err(|_| TokenizeError::ShapeMismatch {
                path: matrix.clone(),
                object: "matrix.mtx".into(),
                detail: format!(
                    "the size line announces {n_cells} cells: cannot allocate their counts"
                ),
            })?;
        counts_per_cell.resize(n_cells, 0);
        let mut grouped = true;
        let mut last_cell = 0usize;
        let mut seen = 0usize;
        while let Some((cell, _, _)) = entries.next_entry()? {
            if cell < last_cell || (cell != last_cell && counts_per_cell[cell] > 0) {
                grouped = false;
            }
            last_cell = cell;
            counts_per_cell[cell] += 1;
            seen += 1;
        }
        if seen != nnz {
            return Err(TokenizeError::ShapeMismatch {
                path: matrix.clone(),
                object: "matrix.mtx".into(),
                detail: format!(
                    "the size line announces {nnz} entries, the file holds {seen} (truncated?)"
                ),
            });
        }
        let (mut entries, _) = Entries::open(&matrix)?;
        entries.genes_are_rows = genes_are_rows;
        let mode = if grouped {
            Mode::Stream { entries }
        } else {
            let mut indptr = vec![0usize; n_cells + 1];
            for (c, n) in counts_per_cell.iter().enumerate() {
                indptr[c + 1] = indptr[c] + n;
            }
            let mut fill = indptr.clone();
            let mut indices = vec![0u32; nnz];
            let mut data = vec![0f32; nnz];
            while let Some((cell, gene, v)) = entries.next_entry()? {
                if fill[cell] >= indptr[cell + 1] {
                    return Err(changed(&matrix));
                }
                indices[fill[cell]] = gene;
                data[fill[cell]] = v;
                fill[cell] += 1;
            }
            Mode::Memory {
                indptr,
                indices,
                data,
            }
        };

        // Cell names.
        let names = match &barcodes {
            Some(b) => {
                let names: Vec<String> = read_lines(b)?
                    .into_iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.split('\t').next().unwrap_or("").to_string())
                    .collect();
                if names.len() != n_cells {
                    return Err(TokenizeError::ShapeMismatch {
                        path: b.clone(),
                        object: "barcodes".into(),
                        detail: format!("{} barcodes for {n_cells} cells", names.len()),
                    });
                }
                names
            }
            None => (0..n_cells).map(|i| i.to_string()).collect(),
        };
        Ok(MtxSource {
            path: path.to_path_buf(),
            genes,
            column,
            obs: ObsTable::from_names(names),
            counts_per_cell,
            mode,
            next_cell: 0,
        })
    }
}

/// The matrix no longer matches what its first pass counted.
fn changed(path: &Path) -> TokenizeError {
    TokenizeError::ShapeMismatch {
        path: path.to_path_buf(),
        object: "matrix.mtx".into(),
        detail: "the file changed since it was first read (entries moved between cells)".into(),
    }
}

impl CellSource for MtxSource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn n_cells(&self) -> usize {
        self.counts_per_cell.len()
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
        if start >= self.n_cells() {
            return Ok(None);
        }
        let end = (start + max_cells).min(self.n_cells());
        let mut chunk = CsrChunk {
            first_cell: start,
            indptr: vec![0],
            ..Default::default()
        };
        match &mut self.mode {
            Mode::Memory {
                indptr,
                indices,
                data,
            } => {
                let (a, b) = (indptr[start], indptr[end]);
                chunk.indices.extend_from_slice(&indices[a..b]);
                chunk.data.extend_from_slice(&data[a..b]);
                chunk
                    .indptr
                    .extend(indptr[start + 1..=end].iter().map(|p| p - a));
            }
            Mode::Stream { entries } => {
                let want: usize = self.counts_per_cell[start..end].iter().sum();
                chunk.indices.reserve(want);
                chunk.data.reserve(want);
                for _ in 0..want {
                    let e = entries.next_entry()?.ok_or_else(|| TokenizeError::Parse {
                        path: entries.path.clone(),
                        line: entries.line_no,
                        detail: "the file ended early".into(),
                    })?;
                    if e.0 < start || e.0 >= end {
                        return Err(changed(&entries.path));
                    }
                    chunk.indices.push(e.1);
                    chunk.data.push(e.2);
                }
                let mut acc = 0;
                for c in start..end {
                    acc += self.counts_per_cell[c];
                    chunk.indptr.push(acc);
                }
            }
        }
        self.next_cell = end;
        Ok(Some(chunk))
    }
}
