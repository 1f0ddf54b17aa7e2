//! Dense CSV/TSV (optionally gzip-compressed): cells × genes, the header line holds the gene
//! names; a first column of cell names is recognised when its values are not numbers.
//! Streams line by line.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::error::{Result, TokenizeError};
use crate::mtx::open_text;
use crate::source::{CellSource, CsrChunk, ObsTable};

/// A dense delimited text matrix as a [`CellSource`].
pub struct DelimitedSource {
    path: PathBuf,
    sep: char,
    has_names: bool,
    genes: Vec<String>,
    obs: ObsTable,
    reader: Box<dyn BufRead>,
    line_no: usize,
    next_cell: usize,
    line: String,
}

fn split(line: &str, sep: char) -> impl Iterator<Item = &str> {
    line.split(sep).map(|f| f.trim().trim_matches('"'))
}

impl DelimitedSource {
    /// Opens the file. One light first pass collects the cell names (first column) so that the
    /// number of cells is known up front.
    pub fn open(path: &Path) -> Result<Self> {
        let lname = path.to_string_lossy().to_lowercase();
        let lname = lname.strip_suffix(".gz").unwrap_or(&lname);
        let sep = if lname.ends_with(".csv") { ',' } else { '\t' };
        // Pass 1 (streamed): the header, the first row's shape, and the first field of each row.
        let mut header: Option<Vec<String>> = None;
        let mut first_fields: Vec<String> = Vec::new();
        let mut first_row_len = 0usize;
        for l in open_text(path)?.lines() {
            let l = l.map_err(|e| TokenizeError::io(path, e))?;
            if l.trim().is_empty() {
                continue;
            }
            if header.is_none() {
                header = Some(split(&l, sep).map(str::to_string).collect());
                continue;
            }
            if first_fields.is_empty() {
                first_row_len = split(&l, sep).count();
            }
            first_fields.push(split(&l, sep).next().unwrap_or("").to_string());
        }
        let header = header.ok_or_else(|| TokenizeError::Parse {
            path: path.to_path_buf(),
            line: 1,
            detail: "empty file (expected a header of gene names)".into(),
        })?;
        let has_names = match first_fields.first() {
            Some(f) => f.parse::<f32>().is_err(),
            None => header.first().is_some_and(|h| h.is_empty()),
        };
        let genes: Vec<String> = if has_names && first_row_len != header.len() + 1 {
            // The header has a leading label (or an empty field) for the name column.
            header.iter().skip(1).cloned().collect()
        } else {
            header.clone()
        };
        let names: Vec<String> = if has_names {
            first_fields
        } else {
            (0..first_fields.len()).map(|i| i.to_string()).collect()
        };
        let mut reader = open_text(path)?;
        // Skip up to and including the header.
        let mut line = String::new();
        let mut line_no = 0;
        loop {
            line.clear();
            line_no += 1;
            if reader
                .read_line(&mut line)
                .map_err(|e| TokenizeError::io(path, e))?
                == 0
                || !line.trim().is_empty()
            {
                break;
            }
        }
        Ok(DelimitedSource {
            path: path.to_path_buf(),
            sep,
            has_names,
            genes,
            obs: ObsTable::from_names(names),
            reader,
            line_no,
            next_cell: 0,
            line,
        })
    }
}

impl CellSource for DelimitedSource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn n_cells(&self) -> usize {
        self.obs.len()
    }
    fn gene_names(&self) -> &[String] {
        &self.genes
    }
    fn gene_column(&self) -> &str {
        "header"
    }
    fn obs(&self) -> &ObsTable {
        &self.obs
    }
    fn next_chunk(&mut self, max_cells: usize) -> Result<Option<CsrChunk>> {
        if self.next_cell >= self.n_cells() {
            return Ok(None);
        }
        let mut chunk = CsrChunk {
            first_cell: self.next_cell,
            indptr: vec![0],
            ..Default::default()
        };
        while chunk.n_cells() < max_cells && self.next_cell < self.n_cells() {
            self.line.clear();
            self.line_no += 1;
            let n = self
                .reader
                .read_line(&mut self.line)
                .map_err(|e| TokenizeError::io(&self.path, e))?;
            if n == 0 {
                return Err(TokenizeError::Parse {
                    path: self.path.clone(),
                    line: self.line_no,
                    detail: "the file ended early".into(),
                });
            }
            if self.line.trim().is_empty() {
                continue;
            }
            let mut fields = split(&self.line, self.sep);
            if self.has_names {
                fields.next();
            }
            let mut n_vals = 0;
            for (j, f) in fields.enumerate() {
                n_vals += 1;
                let v: f32 = if f.is_empty() {
                    0.0
                } else {
                    f.parse().map_err(|_| TokenizeError::Parse {
                        path: self.path.clone(),
                        line: self.line_no,
                        detail: format!(
                            "value '{f}' for gene '{}' is not a number",
                            self.genes.get(j).map_or("?", |s| s)
                        ),
                    })?
                };
                if v != 0.0 {
                    chunk.indices.push(j as u32);
                    chunk.data.push(v);
                }
            }
            if n_vals != self.genes.len() {
                return Err(TokenizeError::Parse {
                    path: self.path.clone(),
                    line: self.line_no,
                    detail: format!(
                        "{n_vals} values, but the header names {} genes",
                        self.genes.len()
                    ),
                });
            }
            chunk.indptr.push(chunk.data.len());
            self.next_cell += 1;
        }
        Ok(Some(chunk))
    }
}
