//! In-silico knockout / over-expression through the encoder ([`insilico_matrix`],
//! [`insilico_file`]).
//!
//! For every cell and perturbed gene: the cell's raw count of the gene is set to 0 (knockout)
//! or multiplied by FOLD (over-expression; a zero count becomes the cell's median non-zero
//! count × FOLD), the preprocessing is recomputed from the changed counts (the total changes
//! with them), the copy is embedded, and the shift is `1 − cos(e_cell, e_perturbed)` of the
//! present-mean pooled cell embeddings. A knockout of a gene the cell does not express is not
//! computed: its shift is exactly 0. The perturbed copies of one cell go through the model
//! together in batches of `batch_size` (the first batch also carries the unperturbed cell);
//! no more than one batch of inputs is held.

use std::path::Path;
use std::time::Instant;

use aido_model::load::LoadMode;
use aido_model::{Embedder, Pooling, Precision};
use aido_tasks::insilico::{InsilicoMode, cell_shifts};
use aido_tokenize::h5ad_edit::UnsValue;
use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::{
    AlignOptions, CellSource, GeneAlignment, ObsColumn, ObsTable, PreprocessConfig, ReadOptions,
    open_source,
};
use burn::prelude::Backend;
use ndarray::Array2;
use serde::Serialize;

use crate::Event;
use crate::error::{PipelineError, Result};
use crate::matrix::CountsMatrix;
use crate::pretrained::Pretrained;

/// Which genes to perturb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// These symbols of the model's list (each measured in the input).
    Genes(Vec<String>),
    /// Every gene of the model's list that the input measures.
    AllMeasured,
}

/// How to perturb.
#[derive(Debug, Clone)]
pub struct InsilicoOptions {
    /// The genes.
    pub targets: Targets,
    /// Knockout (default) or over-expression by a fold.
    pub mode: InsilicoMode,
    /// Perturb only the first N cells.
    pub max_cells: Option<usize>,
    /// Perturbed copies per forward pass (default 8).
    pub batch_size: usize,
    /// Compute precision (default f32).
    pub precision: Precision,
    /// How gene names are read.
    pub align: AlignOptions,
}

impl Default for InsilicoOptions {
    fn default() -> Self {
        InsilicoOptions {
            targets: Targets::AllMeasured,
            mode: InsilicoMode::Knockout,
            max_cells: None,
            batch_size: 8,
            precision: Precision::F32,
            align: AlignOptions::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct InsilicoReport {
    /// The model.
    pub model: String,
    /// The input.
    pub input: String,
    /// `knockout` or `overexpress:FOLD`.
    pub mode: String,
    /// Precision used.
    pub precision: String,
    /// Cells with a row of shifts.
    pub cells: usize,
    /// Perturbed genes.
    pub genes: usize,
    /// Perturbed copies embedded.
    pub computed: usize,
    /// Cells skipped with fewer than 2 expressed genes of the model's list.
    pub cells_skipped_fewer_than_2_genes: usize,
    /// Seconds taken.
    pub seconds: f64,
}

/// The shifts of every cell and perturbed gene.
#[derive(Debug, Clone)]
pub struct InsilicoOutput {
    /// `1 − cos` shifts `[cells, genes]`.
    pub shifts: Array2<f32>,
    /// The perturbed genes (columns).
    pub genes: Vec<String>,
    /// Input index of each row.
    pub kept: Vec<usize>,
    /// Mean shift per gene over all cells.
    pub mean_shift: Vec<f64>,
    /// Cells expressing each gene.
    pub n_expressed: Vec<i64>,
    /// Mean shift per gene over the cells expressing it.
    pub mean_shift_expressed: Vec<f64>,
    /// The cells' obs rows.
    pub obs: ObsTable,
    /// What was done.
    pub report: InsilicoReport,
}

/// Perturbs the cells of any [`CellSource`].
pub fn insilico_source<B: Backend>(
    pretrained: &Pretrained,
    source: &mut dyn CellSource,
    options: &InsilicoOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<InsilicoOutput> {
    let t0 = Instant::now();
    if options.batch_size == 0 {
        return Err(PipelineError::option("batch_size", "must be at least 1"));
    }
    let vocab = &pretrained.vocab;
    let input = source.path().display().to_string();
    let model = pretrained.load::<B>(LoadMode::EncoderOnly, options.precision, device)?;
    let alignment = GeneAlignment::new(
        vocab,
        source.gene_names(),
        source.gene_column(),
        source.path(),
        &options.align.for_vocab(vocab),
    )?;
    on_event(Event::Aligned(alignment.report().clone()));
    let present = alignment.present().to_vec();
    // The perturbed genes: vocabulary positions measured in the input.
    let targets: Vec<usize> = match &options.targets {
        Targets::AllMeasured => (0..vocab.len()).filter(|&p| present[p] == 1).collect(),
        Targets::Genes(genes) => {
            let mut v = Vec::new();
            for g in genes {
                let g = g.trim();
                let p = vocab.position(g).ok_or_else(|| {
                    PipelineError::option(
                        "perturb_genes",
                        format!(
                            "'{g}' is not in the model's gene list {}",
                            pretrained.genes_from
                        ),
                    )
                })?;
                if present[p] == 0 {
                    return Err(PipelineError::option(
                        "perturb_genes",
                        format!(
                            "'{g}' is not measured in {input} (no column of the input maps to it)"
                        ),
                    ));
                }
                if v.contains(&p) {
                    return Err(PipelineError::option(
                        "perturb_genes",
                        format!("'{g}' is listed twice"),
                    ));
                }
                v.push(p);
            }
            v
        }
    };
    if targets.is_empty() {
        return Err(PipelineError::option("perturb_genes", "no gene to perturb"));
    }
    let n_cells = options
        .max_cells
        .unwrap_or(usize::MAX)
        .min(source.n_cells());
    let k = targets.len();
    let embedder = Embedder::new(model.bert, device.clone(), present, Pooling::PresentMean)?;
    let pre = PreprocessConfig::default();
    let mut shifts = vec![0.0f32; n_cells * k];
    let mut kept: Vec<usize> = Vec::with_capacity(n_cells);
    let mut skipped_sparse = 0usize;
    let mut computed = 0usize;
    let mut n_expr = vec![0i64; k];
    let mut mean_expr = vec![0.0f64; k];
    let mut counts = vec![0.0f32; vocab.len()];
    let mut done = 0usize;
    let mut progress = 0usize;
    let total = n_cells * k;
    'cells: while done < n_cells {
        let Some(chunk) = source.next_chunk(64.min(n_cells - done))? else {
            break;
        };
        for r in 0..chunk.n_cells() {
            if done >= n_cells {
                break 'cells;
            }
            let cell = chunk.first_cell + r;
            done += 1;
            counts.fill(0.0);
            let (idx, vals) = chunk.row(r);
            for (&j, &v) in idx.iter().zip(vals) {
                if let Some(p) = alignment.position(j as usize) {
                    if !v.is_finite() || v < 0.0 {
                        return Err(PipelineError::input(
                            &input,
                            format!(
                                "cell {cell} ('{}') holds {v} in gene '{}': in-silico perturbation needs raw counts",
                                source.obs().cell_name(cell),
                                vocab.names()[p as usize]
                            ),
                        ));
                    }
                    counts[p as usize] += v;
                }
            }
            let row_i = kept.len();
            let Some(cs) = cell_shifts(
                &embedder,
                &pre,
                &mut counts,
                &targets,
                options.mode,
                options.batch_size,
                |n| {
                    progress += n;
                    on_event(Event::Progress {
                        stage: "insilico",
                        done: progress,
                        total,
                    });
                },
            )?
            else {
                skipped_sparse += 1;
                progress += k;
                on_event(Event::Progress {
                    stage: "insilico",
                    done: progress,
                    total,
                });
                continue;
            };
            kept.push(cell);
            progress += k - cs.computed;
            on_event(Event::Progress {
                stage: "insilico",
                done: progress,
                total,
            });
            computed += cs.computed;
            shifts[row_i * k..(row_i + 1) * k].copy_from_slice(&cs.shifts);
            for (t, &p) in targets.iter().enumerate() {
                if counts[p] > 0.0 {
                    n_expr[t] += 1;
                    mean_expr[t] += f64::from(shifts[row_i * k + t]);
                }
            }
        }
    }
    let n = kept.len();
    if n == 0 {
        return Err(PipelineError::input(
            &input,
            format!(
                "no cell to perturb ({skipped_sparse} cells with fewer than 2 expressed genes of the model's list)"
            ),
        ));
    }
    shifts.truncate(n * k);
    let mut mean = vec![0.0f64; k];
    for row in shifts.chunks_exact(k) {
        for t in 0..k {
            mean[t] += f64::from(row[t]) / n as f64;
        }
    }
    for t in 0..k {
        if n_expr[t] > 0 {
            mean_expr[t] /= n_expr[t] as f64;
        }
    }
    let genes: Vec<String> = targets.iter().map(|&p| vocab.names()[p].clone()).collect();
    Ok(InsilicoOutput {
        shifts: Array2::from_shape_vec((n, k), shifts)
            .map_err(|_| PipelineError::option("internal", "shift matrix"))?,
        genes,
        obs: source.obs().select(&kept),
        kept,
        mean_shift: mean,
        n_expressed: n_expr,
        mean_shift_expressed: mean_expr,
        report: InsilicoReport {
            model: pretrained.name(),
            input,
            mode: options.mode.label(),
            precision: options.precision.as_str().to_string(),
            cells: n,
            genes: k,
            computed,
            cells_skipped_fewer_than_2_genes: skipped_sparse,
            seconds: t0.elapsed().as_secs_f64(),
        },
    })
}

impl std::fmt::Display for InsilicoOutput {
    /// The run in a line, then the five genes with the largest mean shift.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.report;
        let (n, k) = (r.cells, r.genes);
        write!(
            f,
            "shifts [{n} cells × {k} genes] ({} perturbed copies embedded, {} knockouts of unexpressed genes = 0, {} cells skipped with < 2 expressed genes) in {:.1} s ({:.1} ms per cell×gene computed)",
            r.computed,
            n * k - r.computed,
            r.cells_skipped_fewer_than_2_genes,
            r.seconds,
            1e3 * r.seconds / r.computed.max(1) as f64
        )?;
        for &t in ranking(self).iter().take(5) {
            write!(
                f,
                "\n  {:<16} mean shift {:.3e} ({} cells express it)",
                self.genes[t], self.mean_shift[t], self.n_expressed[t]
            )?;
        }
        Ok(())
    }
}

/// Perturbs the cells of a matrix in memory.
pub fn insilico_matrix<B: Backend>(
    pretrained: &Pretrained,
    matrix: &CountsMatrix<'_>,
    options: &InsilicoOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<InsilicoOutput> {
    insilico_source::<B>(pretrained, &mut matrix.source(), options, device, on_event)
}

/// Perturbs the cells of a file and writes `output` (`.h5ad`: obs = the cells, var = the
/// perturbed genes with `mean_shift`, `n_expressed`, `mean_shift_expressed`, X = the shifts,
/// `uns/aido_insilico`) and beside it a TSV ranking the genes by mean shift (same name,
/// `.tsv`). What `aido insilico` runs.
#[allow(clippy::too_many_arguments)]
pub fn insilico_file<B: Backend>(
    pretrained: &Pretrained,
    input: &Path,
    read: &ReadOptions,
    output: &Path,
    options: &InsilicoOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<InsilicoOutput> {
    if !output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad"))
    {
        return Err(PipelineError::option(
            "output",
            format!("{}: use a .h5ad file name", output.display()),
        ));
    }
    crate::output::check_writable(output, "output")?;
    let mut source = open_source(input, read)?;
    let out = insilico_source::<B>(pretrained, source.as_mut(), options, device, on_event)?;
    let mut w = H5adWriter::new(out.obs.clone(), out.genes.clone());
    w.x = Some(XMatrix::Dense(out.shifts.clone()));
    w.var_columns = vec![
        (
            "mean_shift".into(),
            ObsColumn::Float(out.mean_shift.clone()),
        ),
        (
            "n_expressed".into(),
            ObsColumn::Int(out.n_expressed.clone()),
        ),
        (
            "mean_shift_expressed".into(),
            ObsColumn::Float(out.mean_shift_expressed.clone()),
        ),
    ];
    let r = &out.report;
    w.uns.push((
        "aido_insilico".into(),
        UnsValue::Dict(vec![
            ("model".into(), r.model.clone().into()),
            ("input".into(), r.input.clone().into()),
            ("mode".into(), r.mode.clone().into()),
            ("precision".into(), r.precision.clone().into()),
            (
                "shift".into(),
                "1 - cosine(cell embedding, perturbed cell embedding), present-mean pooling".into(),
            ),
            (
                "overexpress_zero_count".into(),
                "the cell's median non-zero count × FOLD".into(),
            ),
            (
                "cells_skipped_fewer_than_2_genes".into(),
                UnsValue::I64(r.cells_skipped_fewer_than_2_genes as i64),
            ),
        ]),
    ));
    // The TSV summary, ranked by mean shift.
    let order = ranking(&out);
    let mut tsv = String::from("rank\tgene\tmean_shift\tn_expressed\tmean_shift_expressed\n");
    for (rank, &t) in order.iter().enumerate() {
        tsv.push_str(&format!(
            "{}\t{}\t{:.6e}\t{}\t{:.6e}\n",
            rank + 1,
            out.genes[t],
            out.mean_shift[t],
            out.n_expressed[t],
            out.mean_shift_expressed[t]
        ));
    }
    w.write(output)?;
    let tsv_path = output.with_extension("tsv");
    aido_tokenize::io_util::write_bytes_atomically(&tsv_path, tsv.as_bytes())?;
    on_event(Event::Wrote {
        path: output.to_path_buf(),
        what: "insilico shifts".into(),
    });
    on_event(Event::Wrote {
        path: tsv_path,
        what: "gene ranking".into(),
    });
    Ok(out)
}

/// The genes of [`InsilicoOutput`] ranked by mean shift (largest first; ties by column).
pub fn ranking(out: &InsilicoOutput) -> Vec<usize> {
    let mut order: Vec<usize> = (0..out.genes.len()).collect();
    order.sort_by(|&x, &y| {
        out.mean_shift[y]
            .total_cmp(&out.mean_shift[x])
            .then(x.cmp(&y))
    });
    order
}
