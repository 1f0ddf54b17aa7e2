//! In-silico perturbation through the encoder (SPEC-tasks §4), one cell at a time.
//!
//! For a cell's raw counts aligned to the model's genes and a list of genes to perturb: each
//! gene's count is set to 0 ([`InsilicoMode::Knockout`]) or multiplied by FOLD
//! ([`InsilicoMode::Overexpress`]; a zero count becomes the cell's median non-zero count ×
//! FOLD), the preprocessing is recomputed from the changed counts (the total changes with them),
//! the copy is embedded, and the shift is `1 − cos(e_cell, e_perturbed)` of the pooled cell
//! embeddings. A knockout of a gene the cell does not express is not computed: its shift is
//! exactly 0. The perturbed copies go through the model in batches of `batch_size` (the first
//! batch also carries the unperturbed cell), so no more than one batch of inputs is held.

use aido_model::Embedder;
use aido_tokenize::PreprocessConfig;
use burn::tensor::backend::Backend;
use ndarray::Array2;

use crate::{Result, TaskError};

/// What is done to each gene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InsilicoMode {
    /// The count becomes 0.
    Knockout,
    /// The count is multiplied by the fold; a zero count becomes the cell's median non-zero
    /// count times the fold.
    Overexpress(f32),
}

impl InsilicoMode {
    /// Parses `knockout` or `overexpress:FOLD` (FOLD finite, > 0).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "knockout" {
            return Ok(Self::Knockout);
        }
        if let Some(f) = s.strip_prefix("overexpress:") {
            let fold: f32 = f.parse().map_err(|_| {
                TaskError::Config(format!("`mode` {s}: FOLD '{f}' is not a number"))
            })?;
            if !(fold.is_finite() && fold > 0.0) {
                return Err(TaskError::Config(format!(
                    "`mode` {s}: FOLD must be a finite number > 0"
                )));
            }
            return Ok(Self::Overexpress(fold));
        }
        Err(TaskError::Config(format!(
            "`mode` {s}: use knockout or overexpress:FOLD (e.g. overexpress:4)"
        )))
    }

    /// `knockout` or `overexpress:FOLD`.
    pub fn label(self) -> String {
        match self {
            Self::Knockout => "knockout".into(),
            Self::Overexpress(f) => format!("overexpress:{f}"),
        }
    }

    /// The new count of a gene with count `c` in a cell whose median non-zero count is
    /// `median`, or `None` when nothing changes (a knockout of an unexpressed gene).
    pub fn new_count(self, c: f32, median: f32) -> Option<f32> {
        match self {
            Self::Knockout if c == 0.0 => None,
            Self::Knockout => Some(0.0),
            Self::Overexpress(f) if c == 0.0 => Some(median * f),
            Self::Overexpress(f) => Some(c * f),
        }
    }
}

/// `1 − cos(a, b)` in f64 (0 for a zero vector).
pub fn cosine_shift(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += f64::from(*x) * f64::from(*y);
        aa += f64::from(*x) * f64::from(*x);
        bb += f64::from(*y) * f64::from(*y);
    }
    let d = (aa * bb).sqrt();
    if d == 0.0 {
        return 0.0;
    }
    (1.0 - ab / d) as f32
}

/// The shifts of one cell.
#[derive(Debug, Clone)]
pub struct CellShifts {
    /// Shift per target gene (0 where nothing changed).
    pub shifts: Vec<f32>,
    /// Perturbed copies embedded.
    pub computed: usize,
}

/// Shifts of one cell: `counts` are its raw counts over the model's genes (`[G]`), `targets`
/// the gene positions to perturb. `None` for a cell with fewer than 2 expressed genes (a
/// knockout could empty it; zero counts have no preprocessing). `on_batch` is told how many
/// copies each batch embedded.
pub fn cell_shifts<B: Backend>(
    embedder: &Embedder<B>,
    pre: &PreprocessConfig,
    counts: &mut [f32],
    targets: &[usize],
    mode: InsilicoMode,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Option<CellShifts>> {
    let mut nonzero: Vec<f32> = counts.iter().copied().filter(|&c| c > 0.0).collect();
    if nonzero.len() < 2 {
        return Ok(None);
    }
    let total: f32 = nonzero.iter().sum();
    nonzero.sort_by(f32::total_cmp);
    let m = nonzero.len() / 2;
    let median = if nonzero.len().is_multiple_of(2) {
        0.5 * (nonzero[m - 1] + nonzero[m])
    } else {
        nonzero[m]
    };
    let s = counts.len() + aido_tokenize::N_DEPTH_TOKENS;
    let bs = batch_size.max(1);
    let work: Vec<(usize, f32)> = targets
        .iter()
        .enumerate()
        .filter_map(|(t, &p)| mode.new_count(counts[p], median).map(|n| (t, n)))
        .collect();
    let fill = |counts: &[f32], total: f32, out: &mut [f32]| {
        out.fill(0.0);
        pre.fill_row(
            counts.iter().copied().enumerate().filter(|(_, c)| *c > 0.0),
            total,
            out,
        );
    };
    let mut shifts = vec![0.0f32; targets.len()];
    let mut base: Option<Vec<f32>> = None;
    for group in work.chunks(bs) {
        let off = usize::from(base.is_none());
        let mut batch = Array2::<f32>::zeros((group.len() + off, s));
        if off == 1 {
            let mut row = batch.row_mut(0);
            fill(counts, total, row.as_slice_mut().ok_or_else(layout)?);
        }
        for (i, &(t, new)) in group.iter().enumerate() {
            let p = targets[t];
            let old = counts[p];
            counts[p] = new;
            let mut row = batch.row_mut(i + off);
            fill(
                counts,
                total - old + new,
                row.as_slice_mut().ok_or_else(layout)?,
            );
            counts[p] = old;
        }
        let e = embedder.embed(&batch)?.cells;
        let h = e.ncols();
        let rows = e.as_slice().ok_or_else(layout)?;
        if off == 1 {
            base = Some(rows[..h].to_vec());
        }
        let b0 = base.as_deref().ok_or_else(layout)?;
        for (i, &(t, _)) in group.iter().enumerate() {
            shifts[t] = cosine_shift(b0, &rows[(i + off) * h..(i + off + 1) * h]);
        }
        on_batch(group.len());
    }
    Ok(Some(CellShifts {
        shifts,
        computed: work.len(),
    }))
}

fn layout() -> TaskError {
    TaskError::Config("internal: non-contiguous embedding batch".into())
}
