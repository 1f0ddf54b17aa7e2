//! Source → alignment → validation → preprocessing, in batches of model input.

use ndarray::Array2;

use crate::align::{AlignOptions, AlignmentReport, GeneAlignment};
use crate::error::{Result, TokenizeError};
use crate::preprocess::PreprocessConfig;
use crate::source::{CellSource, CsrChunk};
use crate::vocab::GeneVocab;

/// What to do with counts that are not whole numbers (a sign of normalized input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonIntegerPolicy {
    /// Count them, report a warning, and go on (default).
    #[default]
    Warn,
    /// Fail on the first one.
    Error,
}

/// What to do with cells whose aligned total is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptyCellPolicy {
    /// Fail, naming the cells (default).
    #[default]
    Error,
    /// Drop them and count them.
    Skip,
}

/// All settings of a tokenization run.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenizeOptions {
    /// Preprocessing constants.
    pub preprocess: PreprocessConfig,
    /// Alignment plausibility thresholds.
    pub align: AlignOptions,
    /// Non-integer counts.
    pub non_integer: NonIntegerPolicy,
    /// All-zero cells.
    pub empty: EmptyCellPolicy,
}

/// A batch of model input.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[B, G + 2]` input values (genes, then the T and S depth tokens).
    pub values: Array2<f32>,
    /// Input cell index of each row.
    pub cells: Vec<usize>,
    /// Aligned raw total of each row.
    pub totals: Vec<f32>,
    /// Aligned raw counts of each row as `(vocabulary position, count)` pairs (duplicate
    /// entries of a gene merged), for objectives that need the counts themselves (the
    /// read-depth-aware pretraining of `aido-rda`).
    pub counts: Vec<Vec<(u32, f32)>>,
}

/// Running counters of a tokenization, for the final report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizeStats {
    /// Cells read from the input.
    pub cells_read: usize,
    /// Cells emitted.
    pub cells_written: usize,
    /// Cells dropped because their aligned total was zero.
    pub cells_skipped_empty: usize,
    /// Stored values that were not whole numbers.
    pub non_integer_values: usize,
    /// Cells with at least one non-integer value.
    pub non_integer_cells: usize,
    /// The first non-integer value seen: `(cell, gene name, value)`.
    pub first_non_integer: Option<(usize, String, f32)>,
}

impl TokenizeStats {
    /// A human-readable warning about non-integer counts, if there were any.
    pub fn non_integer_warning(&self) -> Option<String> {
        let (cell, gene, value) = self.first_non_integer.as_ref()?;
        Some(format!(
            "warning: {} non-integer counts in {} cells (first: cell {cell}, gene '{gene}' = {value}); the input looks normalized, but AIDO.Cell expects raw counts (accepted because of `allow_non_integer`; a raw-count layer is read with `layer`)",
            self.non_integer_values, self.non_integer_cells
        ))
    }
}

/// Turns a [`CellSource`] into batches of model input.
pub struct Tokenizer<'a> {
    source: &'a mut dyn CellSource,
    vocab: &'a GeneVocab,
    alignment: GeneAlignment,
    opts: TokenizeOptions,
    stats: TokenizeStats,
    row_buf: Vec<(usize, f32)>,
}

impl<'a> Tokenizer<'a> {
    /// Aligns the source's genes to `vocab` (failing on too little overlap) and prepares to read.
    pub fn new(
        source: &'a mut dyn CellSource,
        vocab: &'a GeneVocab,
        opts: TokenizeOptions,
    ) -> Result<Self> {
        let alignment = GeneAlignment::new(
            vocab,
            source.gene_names(),
            source.gene_column(),
            source.path(),
            &opts.align,
        )?;
        Ok(Tokenizer {
            source,
            vocab,
            alignment,
            opts,
            stats: TokenizeStats::default(),
            row_buf: Vec::new(),
        })
    }

    /// The alignment report.
    pub fn report(&self) -> &AlignmentReport {
        self.alignment.report()
    }

    /// The alignment (presence mask etc.).
    pub fn alignment(&self) -> &GeneAlignment {
        &self.alignment
    }

    /// Counters so far.
    pub fn stats(&self) -> &TokenizeStats {
        &self.stats
    }

    /// The source being read.
    pub fn source(&self) -> &dyn CellSource {
        &*self.source
    }

    /// Reads and tokenizes the next batch of at most `batch_size` cells (`None` at the end).
    /// With [`EmptyCellPolicy::Skip`], a batch may hold fewer rows than were read (even zero).
    pub fn next_batch(&mut self, batch_size: usize) -> Result<Option<TokenBatch>> {
        let Some(chunk) = self.source.next_chunk(batch_size.max(1))? else {
            return Ok(None);
        };
        self.tokenize_chunk(&chunk).map(Some)
    }

    /// Reads past the next `n` cells of the source without validating or tokenizing them (a
    /// sharded run starts at its first cell this way); they do not count in the stats. Returns
    /// how many were skipped (fewer at the end of the source).
    pub fn skip_cells(&mut self, n: usize) -> Result<usize> {
        let mut skipped = 0;
        while skipped < n {
            match self.source.next_chunk((n - skipped).min(4096))? {
                Some(chunk) => skipped += chunk.n_cells(),
                None => break,
            }
        }
        Ok(skipped)
    }

    fn gene_name(&self, j: u32) -> String {
        self.source
            .gene_names()
            .get(j as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{j}"))
    }

    /// Validates the next `n` cells of the source (every stored value, as
    /// [`Tokenizer::next_batch`] does) without tokenizing them, and returns the input indices
    /// of the cells with no counts in the model's genes, so that a caller can refuse before any
    /// computation. With [`EmptyCellPolicy::Error`] an empty cell is the same error as in
    /// `next_batch`. Reads past the cells like [`Tokenizer::skip_cells`] (they count in the
    /// stats).
    pub fn scan_cells(&mut self, n: usize) -> Result<Vec<usize>> {
        let mut empty = Vec::new();
        let mut seen = 0;
        while seen < n {
            let Some(chunk) = self.source.next_chunk((n - seen).min(4096))? else {
                break;
            };
            seen += chunk.n_cells();
            empty.extend(self.validate_chunk(&chunk)?.1);
        }
        Ok(empty)
    }

    /// Pass 1 of tokenization: validates every stored value of `chunk` and returns the kept
    /// rows (chunk row, aligned total) and the empty cells (input indices), after applying the
    /// empty-cell policy.
    #[allow(clippy::type_complexity)]
    fn validate_chunk(&mut self, chunk: &CsrChunk) -> Result<(Vec<(usize, f32)>, Vec<usize>)> {
        let n = chunk.n_cells();
        let mut rows: Vec<(usize, f32)> = Vec::with_capacity(n);
        let mut empty: Vec<usize> = Vec::new();
        let n_genes = self.alignment.n_data_genes();
        // Pass 1: validate every stored value, compute aligned totals.
        for i in 0..n {
            let cell = chunk.first_cell + i;
            let (idx, val) = chunk.row(i);
            let mut total = 0.0f32;
            let mut non_int_here = 0usize;
            for (&j, &v) in idx.iter().zip(val) {
                if (j as usize) >= n_genes {
                    return Err(TokenizeError::ShapeMismatch {
                        path: self.source.path().to_path_buf(),
                        object: "matrix".into(),
                        detail: format!(
                            "cell {cell} has a value in gene column {j}, but there are {n_genes} genes"
                        ),
                    });
                }
                if !v.is_finite() || v < 0.0 {
                    return Err(TokenizeError::InvalidCount {
                        path: self.source.path().to_path_buf(),
                        cell,
                        cell_name: self.source.obs().cell_name(cell),
                        gene: self.gene_name(j),
                        value: v,
                    });
                }
                if v.fract() != 0.0 {
                    if self.opts.non_integer == NonIntegerPolicy::Error {
                        return Err(TokenizeError::NonIntegerCount {
                            path: self.source.path().to_path_buf(),
                            cell,
                            cell_name: self.source.obs().cell_name(cell),
                            gene: self.gene_name(j),
                            value: v,
                        });
                    }
                    non_int_here += 1;
                    if self.stats.first_non_integer.is_none() {
                        self.stats.first_non_integer = Some((cell, self.gene_name(j), v));
                    }
                }
                if self.alignment.position(j as usize).is_some() {
                    total += v;
                }
            }
            if non_int_here > 0 {
                self.stats.non_integer_values += non_int_here;
                self.stats.non_integer_cells += 1;
            }
            if total > 0.0 {
                rows.push((i, total));
            } else {
                empty.push(cell);
            }
        }
        self.stats.cells_read += n;
        if !empty.is_empty() {
            match self.opts.empty {
                EmptyCellPolicy::Error => {
                    let examples: Vec<String> = empty
                        .iter()
                        .take(5)
                        .map(|&c| format!("{c} ('{}')", self.source.obs().cell_name(c)))
                        .collect();
                    return Err(TokenizeError::EmptyCells {
                        path: self.source.path().to_path_buf(),
                        count: empty.len(),
                        examples: examples.join(", "),
                    });
                }
                EmptyCellPolicy::Skip => self.stats.cells_skipped_empty += empty.len(),
            }
        }
        Ok((rows, empty))
    }

    /// Validates and tokenizes one window of cells.
    pub fn tokenize_chunk(&mut self, chunk: &CsrChunk) -> Result<TokenBatch> {
        let width = self.vocab.seq_len();
        let (rows, _) = self.validate_chunk(chunk)?;
        // Pass 2: preprocess the kept cells.
        let mut values = Array2::<f32>::zeros((rows.len(), width));
        let mut cells = Vec::with_capacity(rows.len());
        let mut totals = Vec::with_capacity(rows.len());
        let mut counts = Vec::with_capacity(rows.len());
        for (r, &(i, total)) in rows.iter().enumerate() {
            let (idx, val) = chunk.row(i);
            self.row_buf.clear();
            // Duplicate stored entries of the same gene (legal in unsorted COO-derived CSR) add up.
            for (&j, &v) in idx.iter().zip(val) {
                if let Some(p) = self.alignment.position(j as usize) {
                    self.row_buf.push((p as usize, v));
                }
            }
            let mut out = values.row_mut(r);
            let out = out.as_slice_mut().ok_or_else(|| {
                TokenizeError::InvalidArgument("internal: non-contiguous output row".into())
            })?;
            // A canonical row (strictly increasing gene columns) cannot map two entries to one
            // position; otherwise merge duplicates so that they add up instead of overwriting.
            if !idx.windows(2).all(|w| w[0] < w[1]) {
                merge_duplicates(&mut self.row_buf);
            }
            self.opts
                .preprocess
                .fill_row(self.row_buf.iter().copied(), total, out);
            cells.push(chunk.first_cell + i);
            totals.push(total);
            counts.push(
                self.row_buf
                    .iter()
                    .map(|&(p, c)| (p as u32, c))
                    .collect::<Vec<_>>(),
            );
        }
        self.stats.cells_written += cells.len();
        Ok(TokenBatch {
            values,
            cells,
            totals,
            counts,
        })
    }
}

/// Sums entries that share a position, so duplicates never overwrite each other.
fn merge_duplicates(buf: &mut Vec<(usize, f32)>) {
    buf.sort_unstable_by_key(|e| e.0);
    let mut w = 0;
    for r in 0..buf.len() {
        if w > 0 && buf[w - 1].0 == buf[r].0 {
            buf[w - 1].1 += buf[r].1;
        } else {
            buf[w] = buf[r];
            w += 1;
        }
    }
    buf.truncate(w);
}
