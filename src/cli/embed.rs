//! `aido embed`: cell (and gene) embeddings of a single-cell file with a checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_model::attention::AttentionBackend;
use aido_model::backend::DeviceKind;
use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{AidoCellModel, Embedder, Pooling};
use aido_tokenize::h5ad_edit::{H5adAdditions, UnsValue, write_input_plus};
use aido_tokenize::h5ad_out::H5adWriter;
use aido_tokenize::safetensors_out::{Dtype, ExtraTensor, SafetensorsRowWriter};
use aido_tokenize::{GeneVocab, Tokenizer, open_source};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use ndarray::Array2;

use super::{InputArgs, progress};

/// Flags of `aido embed`.
#[derive(Args, Clone)]
pub(crate) struct EmbedArgs {
    /// Checkpoint folder: config.json + model.safetensors or pytorch_model.bin (+ genes.tsv).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Gene vocabulary TSV of the checkpoint (default: MODEL/genes.tsv).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    /// Cell embedding pooling: present-mean (default), mean, present-only-mean or max.
    #[arg(long, default_value = "present-mean")]
    pub pooling: Pooling,
    /// Cells per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Compute device: cpu, cuda (build feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Output: .h5ad (an h5ad input copied whole plus obsm/X_aido_cell; see
    /// --embeddings-only) or .safetensors (tensor `cell_embedding` [n_cells, H]).
    #[arg(long)]
    pub output: PathBuf,
    /// With an .h5ad output: write a small file holding only obs and the embeddings instead
    /// of the whole input plus the embeddings.
    #[arg(long)]
    pub embeddings_only: bool,
    /// Also write contextual embeddings of these genes (comma-separated symbols of the vocabulary).
    #[arg(long, value_delimiter = ',')]
    pub gene_embeddings: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutFormat {
    H5ad,
    Safetensors,
}

fn out_format(p: &Path) -> Result<OutFormat> {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("h5ad") => Ok(OutFormat::H5ad),
        Some("safetensors") => Ok(OutFormat::Safetensors),
        _ => bail!(
            "--output {}: use a .h5ad or .safetensors file name",
            p.display()
        ),
    }
}

/// The gene list: `--genes`, else `MODEL/genes.tsv`, else an error saying where to get it.
fn vocabulary_path(a: &EmbedArgs) -> Result<PathBuf> {
    if let Some(g) = &a.genes {
        return Ok(g.clone());
    }
    let p = a.model.join("genes.tsv");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "no gene list for {}: pass --genes GENES.tsv or put genes.tsv in the checkpoint folder. \
         The released AIDO.Cell checkpoints use the 19,264-gene list OS_scRNA_gene_index.19264.tsv \
         (header `gene_name<TAB>index`, file order = model position order), shipped with the \
         AIDO.Cell code (genbio-ai ModelGenerator) and scFoundation.",
        a.model.display()
    )
}

/// What one embedding run did.
pub(crate) struct EmbedSummary {
    pub cells: usize,
    pub hidden: usize,
    pub seconds: f64,
}

/// Runs `aido embed` on the device the flags name.
pub(crate) fn cmd_embed(a: &EmbedArgs, verbose: bool) -> Result<EmbedSummary> {
    a.device.ensure_compiled()?;
    match a.device {
        DeviceKind::Cpu => embed_on::<aido_model::Cpu>(Default::default(), a, verbose),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => embed_on::<aido_model::backend::Cuda>(Default::default(), a, verbose),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => embed_on::<aido_model::backend::Wgpu>(Default::default(), a, verbose),
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

fn embed_on<B: AttentionBackend>(
    device: B::Device,
    a: &EmbedArgs,
    verbose: bool,
) -> Result<EmbedSummary> {
    let format = out_format(&a.output)?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let genes_path = vocabulary_path(a)?;
    let vocab = GeneVocab::from_tsv(&genes_path)?;
    let (model, cfg) = load_checkpoint::<B>(&a.model, LoadMode::EncoderOnly, &device)?;
    if vocab.seq_len() != cfg.seq_len() {
        bail!(
            "{} lists {} genes but the checkpoint {} has {} gene positions: use the gene list the model was trained with",
            genes_path.display(),
            vocab.len(),
            a.model.display(),
            cfg.seq_len() - 2
        );
    }
    let positions = a
        .gene_embeddings
        .iter()
        .map(|g| {
            vocab.position(g).with_context(|| {
                format!(
                    "--gene-embeddings: '{g}' is not in the gene list {}",
                    genes_path.display()
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    // The output keys, checked before any compute (a gene symbol holding '/' cannot be one).
    if format == OutFormat::H5ad {
        for g in &a.gene_embeddings {
            aido_tokenize::h5ad_edit::check_key(&a.output, "obsm", &format!("X_aido_gene_{g}"))
                .context("--gene-embeddings")?;
        }
    }
    embed_with_model(
        model.bert,
        device,
        &vocab,
        &positions,
        a,
        format,
        verbose,
        &genes_path,
    )
}

#[allow(clippy::too_many_arguments)]
fn embed_with_model<B: AttentionBackend>(
    model: AidoCellModel<B>,
    device: B::Device,
    vocab: &GeneVocab,
    positions: &[usize],
    a: &EmbedArgs,
    format: OutFormat,
    verbose: bool,
    genes_path: &Path,
) -> Result<EmbedSummary> {
    let t0 = Instant::now();
    // An h5ad output of an h5ad input is the whole input plus the embeddings (unless
    // --embeddings-only); other inputs have no AnnData to keep, so they get the small file.
    let whole_file = format == OutFormat::H5ad
        && !a.embeddings_only
        && aido_tokenize::InputFormat::detect(&a.input.input)? == aido_tokenize::InputFormat::H5ad;
    let mut source = open_source(&a.input.input, &a.input.read_options())?;
    let n_cells = source.n_cells();
    let mut tok = Tokenizer::new(source.as_mut(), vocab, a.input.options_for(vocab)?)?;
    if verbose {
        eprintln!("{}", tok.report());
    }
    let present = tok.alignment().present().to_vec();
    for (g, &p) in a.gene_embeddings.iter().zip(positions) {
        if present[p] == 0 {
            eprintln!(
                "warning: gene '{g}' is not measured in {}: its embedding reflects the model's prior only",
                a.input.input.display()
            );
        }
    }
    let embedder = Embedder::new(model, device, present, a.pooling)?
        .with_gene_positions(positions.to_vec())?;
    let h = embedder.hidden_size();
    let k = positions.len();

    let mut meta = BTreeMap::new();
    meta.insert("model".to_string(), a.model.display().to_string());
    meta.insert("input".to_string(), a.input.input.display().to_string());
    meta.insert(
        "gene_vocabulary".to_string(),
        genes_path.display().to_string(),
    );
    meta.insert("pooling".to_string(), a.pooling.name().to_string());
    if k > 0 {
        meta.insert(
            "gene_embedding_genes".to_string(),
            a.gene_embeddings.join(","),
        );
    }
    let mut st_writer = match format {
        OutFormat::Safetensors => {
            let mut hint = vec![ExtraTensor::hint("cell_index", Dtype::I64, vec![n_cells])];
            if k > 0 {
                hint.push(ExtraTensor::hint(
                    "gene_embedding",
                    Dtype::F32,
                    vec![n_cells, k, h],
                ));
            }
            Some(SafetensorsRowWriter::create(
                &a.output,
                "cell_embedding",
                h,
                n_cells,
                &hint,
                meta.clone(),
            )?)
        }
        OutFormat::H5ad => None,
    };
    let pb = if verbose {
        progress(n_cells as u64, "embed")
    } else {
        ProgressBar::hidden()
    };
    let mut cells: Vec<f32> = Vec::new();
    let mut genes: Vec<f32> = Vec::new();
    let mut kept: Vec<usize> = Vec::with_capacity(n_cells);
    while let Some(batch) = tok.next_batch(a.batch_size)? {
        if batch.cells.is_empty() {
            // Every cell of the window was skipped (--skip-empty): no zero-row forward.
            pb.set_position(tok.stats().cells_read as u64);
            continue;
        }
        let emb = match embedder.embed(&batch.values) {
            Ok(e) => e,
            Err(aido_model::ModelError::NonFinite { cell, what }) => {
                let i = batch.cells.get(cell).copied().unwrap_or(cell);
                bail!(
                    "{}: the model gave a non-finite {what} for cell {} ('{}'); nothing was written",
                    a.input.input.display(),
                    i,
                    tok.source().obs().cell_name(i)
                );
            }
            Err(e) => return Err(e.into()),
        };
        let flat = emb
            .cells
            .as_slice()
            .context("internal: non-contiguous embeddings")?;
        match st_writer.as_mut() {
            Some(w) => w.write_rows(flat)?,
            None => cells.extend_from_slice(flat),
        }
        if let Some(g) = &emb.genes {
            genes.extend(g.iter().copied());
        }
        kept.extend(&batch.cells);
        pb.set_position(tok.stats().cells_read as u64);
    }
    pb.finish_and_clear();
    let stats = tok.stats().clone();
    if let Some(w) = stats.non_integer_warning() {
        eprintln!("{w}");
    }
    let n = kept.len();
    match st_writer {
        Some(w) => {
            let idx: Vec<i64> = kept.iter().map(|&c| c as i64).collect();
            let mut extras = vec![ExtraTensor::i64("cell_index", vec![n], &idx)];
            if k > 0 {
                extras.push(ExtraTensor::f32("gene_embedding", vec![n, k, h], &genes));
            }
            w.finish(&extras)?;
        }
        None => {
            let cells =
                Array2::from_shape_vec((n, h), cells).context("internal: embedding shape")?;
            let mut obsm = vec![("X_aido_cell".to_string(), cells)];
            for (j, g) in a.gene_embeddings.iter().enumerate() {
                let col: Vec<f32> = (0..n)
                    .flat_map(|c| genes[(c * k + j) * h..(c * k + j + 1) * h].iter().copied())
                    .collect();
                obsm.push((
                    format!("X_aido_gene_{g}"),
                    Array2::from_shape_vec((n, h), col).context("internal: embedding shape")?,
                ));
            }
            let uns: Vec<(String, String)> = meta
                .into_iter()
                .map(|(key, v)| (format!("aido_embed_{key}"), v))
                .collect();
            if whole_file {
                if n != n_cells {
                    bail!(
                        "{}: {} cells had no counts in the model's genes and were skipped, so the \
                         embeddings do not cover every cell of the file: use --embeddings-only \
                         for a file of the embedded cells only",
                        a.input.input.display(),
                        n_cells - n
                    );
                }
                let add = H5adAdditions {
                    obsm,
                    uns: uns
                        .into_iter()
                        .map(|(k, v)| (k, UnsValue::Str(v)))
                        .collect(),
                    ..Default::default()
                };
                write_input_plus(&a.input.input, &a.output, &add)?;
            } else {
                let obs = tok.source().obs().select(&kept);
                let mut out = H5adWriter::new(obs, Vec::new());
                out.obsm = obsm;
                out.uns = uns;
                out.write(&a.output)?;
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    if verbose {
        if stats.cells_skipped_empty > 0 {
            eprintln!(
                "skipped {} cells with no counts in the aligned genes",
                stats.cells_skipped_empty
            );
        }
        let what = match format {
            OutFormat::H5ad => "obsm/X_aido_cell",
            OutFormat::Safetensors => "cell_embedding",
        };
        outln!(
            "wrote {}: {what} [{n}, {h}] ({} pooling){}; {n} cells in {seconds:.2} s ({:.2} cells/s)",
            a.output.display(),
            a.pooling.name(),
            if k > 0 {
                format!(", {k} gene embeddings")
            } else {
                String::new()
            },
            n as f64 / seconds.max(1e-9)
        );
    }
    Ok(EmbedSummary {
        cells: n,
        hidden: h,
        seconds,
    })
}
