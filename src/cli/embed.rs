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
    /// Compute precision: f32, or bf16 (mixed: bf16 projections; f32 norms, softmax
    /// statistics and outputs; cpu and cuda). Recorded in the output's metadata.
    #[arg(long, default_value = "f32")]
    pub precision: aido_model::Precision,
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
    /// Embed only shard I of N (0-based): cells [⌊I·n/N⌋, ⌊(I+1)·n/N⌋) of the file, written
    /// to a .safetensors shard; `aido merge` assembles the shards into the output one run
    /// would have written (e.g. `--shard $SLURM_ARRAY_TASK_ID/$N`).
    #[arg(long)]
    pub shard: Option<Shard>,
}

/// `--shard I/N`: the `index`-th (0-based) of `count` contiguous, near-equal cell ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not I/N (e.g. 0/4)"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}' is not I/N with whole numbers"))
        };
        let (index, count) = (parse(i)?, parse(n)?);
        if count == 0 || index >= count {
            return Err(format!("'{s}': need N ≥ 1 and 0 ≤ I < N (I is 0-based)"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The cell range `[start, end)` of this shard of `n` cells.
    pub(crate) fn range(self, n: usize) -> (usize, usize) {
        let at = |i: usize| ((i as u128 * n as u128) / self.count as u128) as usize;
        (at(self.index), at(self.index + 1))
    }
}

/// Metadata keys a shard adds to the run's own.
const SHARD_KEYS: [&str; 5] = [
    "shard_index",
    "shard_count",
    "shard_start",
    "shard_end",
    "shard_cells_total",
];

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
    if a.shard.is_some() && format != OutFormat::Safetensors {
        bail!(
            "--shard writes a .safetensors shard (got --output {}); `aido merge --output OUT.h5ad SHARD...` then writes the h5ad",
            a.output.display()
        );
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let genes_path = vocabulary_path(a)?;
    let vocab = GeneVocab::from_tsv(&genes_path)?;
    let (mut model, cfg) = load_checkpoint::<B>(&a.model, LoadMode::EncoderOnly, &device)?;
    model.bert.set_precision(a.precision)?;
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
    let (start, end) = a.shard.map_or((0, n_cells), |s| s.range(n_cells));
    let mut tok = Tokenizer::new(source.as_mut(), vocab, a.input.options_for(vocab)?)?;
    if tok.skip_cells(start)? != start {
        bail!(
            "{}: fewer than the {n_cells} cells its header declares",
            a.input.input.display()
        );
    }
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
    meta.insert("precision".to_string(), a.precision.to_string());
    if k > 0 {
        meta.insert(
            "gene_embedding_genes".to_string(),
            a.gene_embeddings.join(","),
        );
    }
    let mut st_meta = meta.clone();
    if let Some(s) = a.shard {
        for (key, v) in SHARD_KEYS
            .iter()
            .zip([s.index, s.count, start, end, n_cells])
        {
            st_meta.insert(key.to_string(), v.to_string());
        }
    }
    let mut st_writer = match format {
        OutFormat::Safetensors => Some(embedding_writer(&a.output, h, k, end - start, st_meta)?),
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
    loop {
        let pos = start + tok.stats().cells_read;
        if pos >= end {
            break;
        }
        let Some(batch) = tok.next_batch(a.batch_size.min(end - pos))? else {
            break;
        };
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
        Some(w) => finish_embeddings(w, &kept, k, h, &genes)?,
        None => {
            let obs = || Ok(tok.source().obs().select(&kept));
            write_h5ad(
                &a.input.input,
                &a.output,
                whole_file,
                n_cells,
                &kept,
                cells,
                &genes,
                &a.gene_embeddings,
                h,
                meta,
                obs,
            )?;
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

/// The streamed writer of `cell_embedding [rows, h]` (+ `cell_index`, `gene_embedding`).
fn embedding_writer(
    output: &Path,
    h: usize,
    k: usize,
    rows: usize,
    meta: BTreeMap<String, String>,
) -> Result<SafetensorsRowWriter> {
    let mut hint = vec![ExtraTensor::hint("cell_index", Dtype::I64, vec![rows])];
    if k > 0 {
        hint.push(ExtraTensor::hint(
            "gene_embedding",
            Dtype::F32,
            vec![rows, k, h],
        ));
    }
    Ok(SafetensorsRowWriter::create(
        output,
        "cell_embedding",
        h,
        rows,
        &hint,
        meta,
    )?)
}

/// Closes a [`embedding_writer`] with the cells' indices and gene embeddings.
fn finish_embeddings(
    w: SafetensorsRowWriter,
    kept: &[usize],
    k: usize,
    h: usize,
    genes: &[f32],
) -> Result<()> {
    let n = kept.len();
    let idx: Vec<i64> = kept.iter().map(|&c| c as i64).collect();
    let mut extras = vec![ExtraTensor::i64("cell_index", vec![n], &idx)];
    if k > 0 {
        extras.push(ExtraTensor::f32("gene_embedding", vec![n, k, h], genes));
    }
    w.finish(&extras)?;
    Ok(())
}

/// The h5ad output: the whole input plus `obsm/X_aido_cell` (and gene embeddings), or a small
/// file of `obs` (of the embedded cells) and the embeddings.
#[allow(clippy::too_many_arguments)]
fn write_h5ad(
    input: &Path,
    output: &Path,
    whole_file: bool,
    n_cells: usize,
    kept: &[usize],
    cells: Vec<f32>,
    genes: &[f32],
    gene_names: &[String],
    h: usize,
    meta: BTreeMap<String, String>,
    obs: impl FnOnce() -> Result<aido_tokenize::ObsTable>,
) -> Result<()> {
    let n = kept.len();
    let k = gene_names.len();
    let cells = Array2::from_shape_vec((n, h), cells).context("internal: embedding shape")?;
    let mut obsm = vec![("X_aido_cell".to_string(), cells)];
    for (j, g) in gene_names.iter().enumerate() {
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
                input.display(),
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
        write_input_plus(input, output, &add)?;
    } else {
        let mut out = H5adWriter::new(obs()?, Vec::new());
        out.obsm = obsm;
        out.uns = uns;
        out.write(output)?;
    }
    Ok(())
}

/// Flags of `aido merge`.
#[derive(Args, Clone)]
pub(crate) struct MergeArgs {
    /// Output: .h5ad (an h5ad input copied whole plus obsm/X_aido_cell, as `aido embed`
    /// writes it) or .safetensors.
    #[arg(long)]
    pub output: PathBuf,
    /// With an .h5ad output: a small file of obs and the embeddings only.
    #[arg(long)]
    pub embeddings_only: bool,
    /// The shards written by `aido embed --shard I/N`, in any order; all N are needed.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

/// One shard file, read.
struct ShardFile {
    path: PathBuf,
    meta: BTreeMap<String, String>,
    shard: Shard,
    range: (usize, usize),
    total: usize,
    h: usize,
    cells: Vec<f32>,
    index: Vec<usize>,
    genes: Vec<f32>,
}

fn read_shard(path: &Path) -> Result<ShardFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let meta: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let num = |key: &str| -> Result<usize> {
        meta.get(key).and_then(|v| v.parse().ok()).with_context(|| {
            format!(
                "{}: no '{key}' in its metadata: not a shard written by `aido embed --shard I/N`",
                path.display()
            )
        })
    };
    let shard = Shard {
        index: num("shard_index")?,
        count: num("shard_count")?,
    };
    let (start, end, total) = (
        num("shard_start")?,
        num("shard_end")?,
        num("shard_cells_total")?,
    );
    if shard.count == 0 || shard.index >= shard.count || shard.range(total) != (start, end) {
        bail!(
            "{}: shard {}/{} of {total} cells should cover {:?}, its metadata says {start}..{end}",
            path.display(),
            shard.index,
            shard.count,
            if shard.count > 0 {
                shard.range(total)
            } else {
                (0, 0)
            }
        );
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let tensor = |name: &str| {
        st.tensor(name)
            .with_context(|| format!("{}: no tensor '{name}'", path.display()))
    };
    let ce = tensor("cell_embedding")?;
    let &[m, h] = ce.shape() else {
        bail!("{}: cell_embedding is not 2-D", path.display());
    };
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let ci = tensor("cell_index")?;
    let index: Vec<usize> = ci
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as usize)
        .collect();
    if index.len() != m || index.iter().any(|&i| i < start || i >= end) {
        bail!(
            "{}: cell_index does not match its {m} embeddings within cells {start}..{end}",
            path.display()
        );
    }
    let genes = match st.tensor("gene_embedding") {
        Ok(t) => f32s(t.data()),
        Err(_) => Vec::new(),
    };
    Ok(ShardFile {
        path: path.to_path_buf(),
        shard,
        range: (start, end),
        total,
        h,
        cells: f32s(ce.data()),
        index,
        genes,
        meta: meta
            .into_iter()
            .filter(|(k, _)| !SHARD_KEYS.contains(&k.as_str()))
            .collect(),
    })
}

/// `aido merge`: the shards of one `aido embed --shard I/N` run, assembled into the output the
/// unsharded run writes (the same bytes). Missing, duplicate or mismatched shards are refused
/// before anything is written.
pub(crate) fn cmd_merge(a: &MergeArgs) -> Result<()> {
    let format = out_format(&a.output)?;
    let mut shards = a
        .shards
        .iter()
        .map(|p| read_shard(p))
        .collect::<Result<Vec<_>>>()?;
    shards.sort_by_key(|s| s.shard.index);
    let first = &shards[0];
    for s in &shards[1..] {
        if s.shard.count != first.shard.count || s.total != first.total || s.h != first.h {
            bail!(
                "{} is shard {}/{} of {} cells (H = {}), {} is shard {}/{} of {} cells (H = {}): not one run",
                first.path.display(),
                first.shard.index,
                first.shard.count,
                first.total,
                first.h,
                s.path.display(),
                s.shard.index,
                s.shard.count,
                s.total,
                s.h
            );
        }
        if let Some(key) = first
            .meta
            .keys()
            .chain(s.meta.keys())
            .find(|k| first.meta.get(*k) != s.meta.get(*k))
        {
            bail!(
                "{} and {} differ in '{key}' ({:?} vs {:?}): not shards of one run",
                first.path.display(),
                s.path.display(),
                first.meta.get(key),
                s.meta.get(key)
            );
        }
    }
    for w in shards.windows(2) {
        if w[0].shard.index == w[1].shard.index {
            bail!(
                "{} and {} are both shard {}/{}",
                w[0].path.display(),
                w[1].path.display(),
                w[0].shard.index,
                w[0].shard.count
            );
        }
    }
    let n_shards = first.shard.count;
    let have: Vec<usize> = shards.iter().map(|s| s.shard.index).collect();
    let missing: Vec<String> = (0..n_shards)
        .filter(|i| !have.contains(i))
        .map(|i| format!("{i}/{n_shards}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing shard(s) {} of the {n_shards} (cells {}..{} of {})",
            missing.join(", "),
            first.range.0,
            first.range.1,
            first.total
        );
    }
    let (h, n_cells, meta) = (first.h, first.total, first.meta.clone());
    let gene_names: Vec<String> = meta
        .get("gene_embedding_genes")
        .map(|g| g.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let k = gene_names.len();
    let input = PathBuf::from(meta.get("input").context("the shards record no input")?);
    let mut kept = Vec::new();
    let mut cells = Vec::new();
    let mut genes = Vec::new();
    for s in shards {
        kept.extend(s.index);
        cells.extend(s.cells);
        genes.extend(s.genes);
    }
    match format {
        OutFormat::Safetensors => {
            let mut w = embedding_writer(&a.output, h, k, n_cells, meta)?;
            w.write_rows(&cells)?;
            finish_embeddings(w, &kept, k, h, &genes)?;
        }
        OutFormat::H5ad => {
            let whole_file = !a.embeddings_only
                && aido_tokenize::InputFormat::detect(&input)? == aido_tokenize::InputFormat::H5ad;
            if !input.exists() {
                bail!(
                    "the input {} recorded in the shards is not found from here (run merge where embed ran)",
                    input.display()
                );
            }
            let obs = || -> Result<aido_tokenize::ObsTable> {
                let src = open_source(&input, &Default::default())?;
                Ok(src.obs().select(&kept))
            };
            write_h5ad(
                &input,
                &a.output,
                whole_file,
                n_cells,
                &kept,
                cells,
                &genes,
                &gene_names,
                h,
                meta,
                obs,
            )?;
        }
    }
    outln!(
        "wrote {}: {} cells from {n_shards} shards",
        a.output.display(),
        kept.len()
    );
    Ok(())
}
