//! `aido insilico`: in-silico knockout / over-expression through the encoder.
//!
//! For every cell and perturbed gene: the cell's raw count of the gene is set to 0 (knockout)
//! or multiplied by FOLD (over-expression; a zero count becomes the cell's median non-zero
//! count × FOLD), the preprocessing is recomputed from the changed counts (the total changes
//! with them), the copy is embedded, and the shift is `1 − cos(e_cell, e_perturbed)` of the
//! pooled cell embeddings. A knockout of a gene the cell does not express is not computed: its
//! shift is exactly 0. The perturbed copies of one cell go through the model together in
//! batches of `--batch-size` (the first batch also carries the unperturbed cell); no more than
//! one batch of inputs is held.

use std::path::PathBuf;
use std::time::Instant;

use aido_model::attention::AttentionBackend;
use aido_model::backend::DeviceKind;
use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{Embedder, Pooling};
use aido_tasks::insilico::{InsilicoMode, cell_shifts};
use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::{
    AlignOptions, GeneAlignment, GeneVocab, ObsColumn, PreprocessConfig, ReadOptions, open_source,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;

/// Flags of `aido insilico`.
#[derive(Args, Clone)]
pub(crate) struct InsilicoArgs {
    /// Checkpoint folder (config.json + weights, genes.tsv).
    #[arg(long)]
    pub model: PathBuf,
    /// Input .h5ad (raw counts in X, or --layer).
    #[arg(long)]
    pub input: PathBuf,
    /// Output .h5ad: obs = the cells, var = the perturbed genes, X = the shifts; a TSV summary
    /// beside it (same name, .tsv).
    #[arg(long)]
    pub output: PathBuf,
    /// Comma-separated genes to perturb (symbols of the model's gene list, measured in the file).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "all_genes",
        conflicts_with = "all_genes"
    )]
    pub perturb_genes: Vec<String>,
    /// Perturb every gene of the model's list that the file measures.
    #[arg(long)]
    pub all_genes: bool,
    /// knockout, or overexpress:FOLD (e.g. overexpress:4).
    #[arg(long, default_value = "knockout")]
    pub mode: String,
    /// Gene list of the checkpoint (default: MODEL/genes.tsv).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    /// Read `layers/NAME` instead of X.
    #[arg(long)]
    pub layer: Option<String>,
    /// var column with the gene symbols (default: the var index).
    #[arg(long)]
    pub gene_column: Option<String>,
    /// How the gene names are read: `symbol`, `ensembl`, `auto` (each name by its shape) or `exact` (exact symbols only, the authors' preprocessing).
    #[arg(long, default_value = "auto")]
    pub gene_id: aido_tokenize::GeneIdMode,
    /// Perturb only the first N cells.
    #[arg(long)]
    pub max_cells: Option<usize>,
    /// Perturbed copies per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Compute precision: f32, or bf16 (mixed: bf16 projections; f32 norms, softmax
    /// statistics and outputs; cpu and cuda).
    #[arg(long, default_value = "f32")]
    pub precision: aido_model::Precision,
    /// No progress bar or summary on the terminal.
    #[arg(long)]
    pub quiet: bool,
}

pub(crate) fn cmd_insilico(a: &InsilicoArgs) -> Result<()> {
    a.device.ensure_compiled()?;
    match a.device {
        DeviceKind::Cpu => run::<aido_model::Cpu>(Default::default(), a),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => run::<aido_model::backend::Cuda>(Default::default(), a),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => run::<aido_model::backend::Wgpu>(Default::default(), a),
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

fn run<B: AttentionBackend>(device: B::Device, a: &InsilicoArgs) -> Result<()> {
    let t0 = Instant::now();
    let mode = InsilicoMode::parse(&a.mode)?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !a
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad"))
    {
        bail!("--output {}: use a .h5ad file name", a.output.display());
    }
    let genes_path = a.genes.clone().unwrap_or_else(|| a.model.join("genes.tsv"));
    let vocab = GeneVocab::from_tsv(&genes_path).with_context(|| {
        format!(
            "the model's gene list (pass --genes, or put genes.tsv in {})",
            a.model.display()
        )
    })?;
    let (mut model, cfg) = load_checkpoint::<B>(&a.model, LoadMode::EncoderOnly, &device)?;
    model.bert.set_precision(a.precision)?;
    if vocab.seq_len() != cfg.seq_len() {
        bail!(
            "{} lists {} genes but the checkpoint {} has {} gene positions",
            genes_path.display(),
            vocab.len(),
            a.model.display(),
            cfg.seq_len() - 2
        );
    }
    let mut source = open_source(
        &a.input,
        &ReadOptions {
            gene_column: a.gene_column.clone(),
            layer: a.layer.clone(),
        },
    )?;
    let align_opts = AlignOptions {
        gene_id: a.gene_id,
        ..aido_train::data::align_options(&vocab)
    };
    let alignment = GeneAlignment::new(
        &vocab,
        source.gene_names(),
        source.gene_column(),
        source.path(),
        &align_opts,
    )?;
    let present = alignment.present().to_vec();
    // The perturbed genes: vocabulary positions measured in the file.
    let targets: Vec<usize> = if a.all_genes {
        (0..vocab.len()).filter(|&p| present[p] == 1).collect()
    } else {
        let mut v = Vec::new();
        for g in &a.perturb_genes {
            let g = g.trim();
            let p = vocab.position(g).with_context(|| {
                format!(
                    "--perturb-genes: '{g}' is not in the model's gene list {}",
                    genes_path.display()
                )
            })?;
            if present[p] == 0 {
                bail!(
                    "--perturb-genes: '{g}' is not measured in {} (no column of the file maps to it)",
                    a.input.display()
                );
            }
            if v.contains(&p) {
                bail!("--perturb-genes: '{g}' is listed twice");
            }
            v.push(p);
        }
        v
    };
    if targets.is_empty() {
        bail!("no gene to perturb");
    }
    let n_cells = a.max_cells.unwrap_or(usize::MAX).min(source.n_cells());
    let k = targets.len();
    let embedder = Embedder::new(model.bert, device, present, Pooling::PresentMean)?;
    let pre = PreprocessConfig::default();
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new((n_cells * k) as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} insilico {msg} [{bar:30}] {pos}/{len} cell×gene ({per_sec}, eta {eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(mode.label());
        pb
    };
    let mut shifts = vec![0.0f32; n_cells * k];
    let mut kept: Vec<usize> = Vec::with_capacity(n_cells);
    let mut skipped_sparse = 0usize;
    let mut computed = 0usize;
    let mut n_expr = vec![0i64; k];
    let mut mean_expr = vec![0.0f64; k];
    let mut counts = vec![0.0f32; vocab.len()];
    let mut done = 0usize;
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
                        bail!(
                            "{}: cell {cell} ('{}') holds {v} in gene '{}': in-silico perturbation needs raw counts",
                            a.input.display(),
                            source.obs().cell_name(cell),
                            vocab.names()[p as usize]
                        );
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
                mode,
                a.batch_size,
                |n| pb.inc(n as u64),
            )?
            else {
                skipped_sparse += 1;
                pb.inc(k as u64);
                continue;
            };
            kept.push(cell);
            pb.inc((k - cs.computed) as u64);
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
    pb.finish_and_clear();
    let n = kept.len();
    if n == 0 {
        bail!(
            "{}: no cell to perturb ({skipped_sparse} cells with fewer than 2 expressed genes of the model's list)",
            a.input.display()
        );
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
    let names: Vec<String> = targets.iter().map(|&p| vocab.names()[p].clone()).collect();
    let obs = source.obs().select(&kept);
    let mut w = H5adWriter::new(obs, names.clone());
    w.x = Some(XMatrix::Dense(
        Array2::from_shape_vec((n, k), shifts).context("internal: shift matrix")?,
    ));
    w.var_columns = vec![
        ("mean_shift".into(), ObsColumn::Float(mean.clone())),
        ("n_expressed".into(), ObsColumn::Int(n_expr.clone())),
        (
            "mean_shift_expressed".into(),
            ObsColumn::Float(mean_expr.clone()),
        ),
    ];
    w.uns.push((
        "aido_insilico".into(),
        serde_json::json!({
            "model": a.model.display().to_string(),
            "input": a.input.display().to_string(),
            "mode": mode.label(),
            "precision": a.precision.as_str(),
            "shift": "1 - cosine(cell embedding, perturbed cell embedding), present-mean pooling",
            "overexpress_zero_count": "the cell's median non-zero count × FOLD",
            "cells_skipped_fewer_than_2_genes": skipped_sparse,
        })
        .to_string(),
    ));
    w.write(&a.output)?;
    // The TSV summary, ranked by mean shift.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&x, &y| mean[y].total_cmp(&mean[x]).then(x.cmp(&y)));
    let mut tsv = String::from("rank\tgene\tmean_shift\tn_expressed\tmean_shift_expressed\n");
    for (r, &t) in order.iter().enumerate() {
        tsv.push_str(&format!(
            "{}\t{}\t{:.6e}\t{}\t{:.6e}\n",
            r + 1,
            names[t],
            mean[t],
            n_expr[t],
            mean_expr[t]
        ));
    }
    let tsv_path = a.output.with_extension("tsv");
    aido_train::checkpoint::write_atomic(&tsv_path, tsv.as_bytes())?;
    let seconds = t0.elapsed().as_secs_f64();
    if !a.quiet {
        outln!(
            "wrote {}: shifts [{n} cells × {k} genes] ({computed} perturbed copies embedded, {} knockouts of unexpressed genes = 0, {skipped_sparse} cells skipped with < 2 expressed genes) in {seconds:.1} s ({:.1} ms per cell×gene computed); ranking in {}",
            a.output.display(),
            n * k - computed,
            1e3 * seconds / computed.max(1) as f64,
            tsv_path.display()
        );
        for &t in order.iter().take(5) {
            outln!(
                "  {:<16} mean shift {:.3e} ({} cells express it)",
                names[t],
                mean[t],
                n_expr[t]
            );
        }
    }
    Ok(())
}
