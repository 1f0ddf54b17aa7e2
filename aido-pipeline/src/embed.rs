//! Cell (and gene) embeddings: in memory ([`embed_matrix`]) or file to file ([`embed_file`],
//! what `aido embed` runs), plus the shards of one run ([`Shard`], [`merge_shards`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_model::load::LoadMode;
use aido_model::{Embedder, Pooling, Precision};
use aido_tokenize::h5ad_edit::{H5adAdditions, UnsValue};
use aido_tokenize::safetensors_out::{Dtype, ExtraTensor, SafetensorsRowWriter};
use aido_tokenize::{
    CellSource, InputFormat, ReadOptions, TokenizeOptions, Tokenizer, open_source,
};
use burn::prelude::Backend;
use ndarray::{Array2, Array3};
use serde::Serialize;

use crate::Event;
use crate::error::{PipelineError, Result};
use crate::matrix::CountsMatrix;
use crate::pretrained::Pretrained;

/// How to embed.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Cell pooling (default present-mean, the authors' embed script).
    pub pooling: Pooling,
    /// Cells per forward pass (default 8).
    pub batch_size: usize,
    /// Compute precision (default f32).
    pub precision: Precision,
    /// Reading and validating the counts (the gene alignment thresholds are applied to the
    /// model's gene list with `AlignOptions::for_vocab`).
    pub tokenize: TokenizeOptions,
    /// Also return contextual embeddings of these genes (symbols of the model's list).
    pub gene_embeddings: Vec<String>,
    /// Embed at most this many cells (the first ones; of a shard, its first ones): a trial run
    /// on a large file. A file written back whole then gets the small file instead.
    pub max_cells: Option<usize>,
    /// The obsm key of the cell embeddings in an h5ad output (`None`: `X_aido_cell`), as
    /// scanpy's `key_added`.
    pub key_added: Option<String>,
}

/// The obsm key of the cell embeddings when none is given.
pub const DEFAULT_EMBED_KEY: &str = "X_aido_cell";

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            pooling: Pooling::PresentMean,
            batch_size: 8,
            precision: Precision::F32,
            tokenize: TokenizeOptions::default(),
            gene_embeddings: Vec::new(),
            max_cells: None,
            key_added: None,
        }
    }
}

impl EmbedOptions {
    /// The obsm key of the cell embeddings ([`EmbedOptions::key_added`] or `X_aido_cell`).
    pub fn obsm_key(&self) -> &str {
        self.key_added.as_deref().unwrap_or(DEFAULT_EMBED_KEY)
    }
}

/// What an embedding run did.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    /// The model (folder or id).
    pub model: String,
    /// The input (file, or the matrix's label).
    pub input: String,
    /// Where the gene list came from.
    pub gene_vocabulary: String,
    /// Pooling used.
    pub pooling: String,
    /// Precision used.
    pub precision: String,
    /// Cells in the input (or in the shard's range).
    pub cells_in: usize,
    /// Cells embedded.
    pub cells_embedded: usize,
    /// Cells skipped for having no counts in the model's genes (with `EmptyCellPolicy::Skip`).
    pub cells_skipped_empty: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Genes of the input placed on the model's list.
    pub genes_matched: usize,
    /// Genes of the input.
    pub genes_in_input: usize,
    /// Genes of the model's list.
    pub genes_in_model: usize,
    /// Genes whose embeddings were asked for.
    pub gene_embeddings: Vec<String>,
    /// Seconds taken.
    pub seconds: f64,
}

impl EmbedReport {
    /// The metadata an output records (safetensors metadata; `uns/aido_embed_*` in an h5ad).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut meta = BTreeMap::new();
        meta.insert("model".to_string(), self.model.clone());
        meta.insert("input".to_string(), self.input.clone());
        meta.insert("gene_vocabulary".to_string(), self.gene_vocabulary.clone());
        meta.insert("pooling".to_string(), self.pooling.clone());
        meta.insert("precision".to_string(), self.precision.clone());
        if !self.gene_embeddings.is_empty() {
            meta.insert(
                "gene_embedding_genes".to_string(),
                self.gene_embeddings.join(","),
            );
        }
        meta
    }
}

impl std::fmt::Display for EmbedReport {
    /// `[n, H] (present-mean pooling, 2 gene embeddings); n cells in 1.23 s (45.6 cells/s)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, k) = (self.cells_embedded, self.gene_embeddings.len());
        let genes = if k > 0 {
            format!(", {k} gene embeddings")
        } else {
            String::new()
        };
        write!(
            f,
            "[{n}, {}] ({} pooling{genes}); {n} cells in {:.2} s ({:.2} cells/s)",
            self.hidden,
            self.pooling,
            self.seconds,
            n as f64 / self.seconds.max(1e-9)
        )
    }
}

/// Embeddings in memory.
#[derive(Debug, Clone)]
pub struct EmbedOutput {
    /// Cell embeddings `[n, H]`, one row per embedded cell.
    pub cells: Array2<f32>,
    /// Gene embeddings `[n, K, H]` of the genes asked for (`K` = 0 when none).
    pub genes: Array3<f32>,
    /// Input index of each row (all cells, unless empty cells were skipped).
    pub kept: Vec<usize>,
    /// What was done.
    pub report: EmbedReport,
}

/// A model loaded for embedding, with the options checked.
struct Prepared<B: Backend> {
    model: aido_model::AidoCellModel<B>,
    device: B::Device,
    positions: Vec<usize>,
}

fn prepare<B: Backend>(
    pretrained: &Pretrained,
    options: &EmbedOptions,
    device: &B::Device,
) -> Result<Prepared<B>> {
    if options.batch_size == 0 {
        return Err(PipelineError::option("batch_size", "must be at least 1"));
    }
    let positions = pretrained.positions(&options.gene_embeddings, "gene_embeddings")?;
    let model = pretrained.load::<B>(LoadMode::EncoderOnly, options.precision, device)?;
    Ok(Prepared {
        model: model.bert,
        device: device.clone(),
        positions,
    })
}

/// The line shown before the first batch: what is embedded, how, and where.
fn run_summary<B: Backend>(
    pretrained: &Pretrained,
    options: &EmbedOptions,
    cells: usize,
    backend: &str,
) -> String {
    let c = &pretrained.config;
    let threads = if aido_model::attention::is_cpu_backend::<B>() {
        format!(", {} threads", crate::device::threads())
    } else {
        String::new()
    };
    format!(
        "embedding {cells} cells with {}: {} positions, {} layers × {} hidden, {} on {backend}{threads} (attention: {}), batches of {}",
        pretrained.name(),
        c.seq_len(),
        c.num_hidden_layers,
        c.hidden_size,
        options.precision,
        aido_model::attention::attention_path::<B>(options.precision),
        options.batch_size
    )
}

/// A duration for people: `45 s`, `12 min`, `3.4 h`.
fn duration_text(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{:.0} s", seconds.max(1.0))
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// `[start, end)` cut to at most [`EmbedOptions::max_cells`] cells.
fn limit((start, end): (usize, usize), options: &EmbedOptions) -> Result<(usize, usize)> {
    match options.max_cells {
        Some(0) => Err(PipelineError::option("max_cells", "must be at least 1")),
        Some(m) => Ok((start, end.min(start + m))),
        None => Ok((start, end)),
    }
}

/// One pass over cells `[start, end)` of `input` before the model is loaded, so that nothing
/// is computed for a run that would fail: every stored value valid, no cell without counts in
/// the model's genes (unless empty cells are skipped), and, when the whole input is written
/// back, none skipped.
fn scan_input(
    input: &Path,
    read: &ReadOptions,
    pretrained: &Pretrained,
    tokenize: TokenizeOptions,
    (start, end): (usize, usize),
    whole_file: bool,
) -> Result<()> {
    let mut source = open_source(input, read)?;
    let mut opts = tokenize;
    opts.align = opts.align.for_vocab(&pretrained.vocab);
    let mut tok = Tokenizer::new(source.as_mut(), &pretrained.vocab, opts)?;
    tok.skip_cells(start)?;
    let empty = tok.scan_cells(end - start)?;
    if whole_file && let Some(&first) = empty.first() {
        return Err(PipelineError::input(
            input.display(),
            format!(
                "{} {} no counts in the model's genes (the first: cell {first}, '{}'), so \
                 skipping them would leave the whole file written back without their results: \
                 drop those cells first, or write the processed cells only (`embeddings_only`)",
                empty.len(),
                if empty.len() == 1 {
                    "cell has"
                } else {
                    "cells have"
                },
                tok.source().obs().cell_name(first)
            ),
        ));
    }
    Ok(())
}

/// Receives each batch's rows: cells `[b·H]`, gene embeddings `[b·K·H]`, input indices `[b]`.
type Sink<'a> = dyn FnMut(&[f32], &[f32], &[usize]) -> Result<()> + 'a;

/// Embeds cells `[start, end)` of `source` (all of them by default), handing each batch's rows
/// to `sink(cells [b·H], genes [b·K·H], input indices)`.
fn run<B: Backend>(
    p: Prepared<B>,
    pretrained: &Pretrained,
    source: &mut dyn CellSource,
    options: &EmbedOptions,
    range: Option<(usize, usize)>,
    on_event: &mut dyn FnMut(Event),
    sink: &mut Sink<'_>,
) -> Result<EmbedReport> {
    let t0 = Instant::now();
    let vocab = &pretrained.vocab;
    let n_cells = source.n_cells();
    let (start, end) = limit(range.unwrap_or((0, n_cells)), options)?;
    let input = source.path().display().to_string();
    let mut tokenize = options.tokenize;
    tokenize.align = tokenize.align.for_vocab(vocab);
    let mut tok = Tokenizer::new(source, vocab, tokenize)?;
    if tok.skip_cells(start)? != start {
        return Err(PipelineError::option(
            "cells",
            format!("{input}: fewer than the {n_cells} cells its header declares"),
        ));
    }
    on_event(Event::Aligned(tok.report().clone()));
    let present = tok.alignment().present().to_vec();
    for (g, &pos) in options.gene_embeddings.iter().zip(&p.positions) {
        if present[pos] == 0 {
            on_event(Event::Note(format!(
                "warning: gene '{g}' is not measured in {input}: its embedding reflects the model's prior only"
            )));
        }
    }
    let genes_matched = present[..vocab.len()].iter().filter(|&&x| x == 1).count();
    let genes_in_input = tok.report().n_data_genes;
    let backend = B::name(&p.device);
    let embedder = Embedder::new(p.model, p.device, present, options.pooling)?
        .with_gene_positions(p.positions.clone())?;
    let h = embedder.hidden_size();
    let total = end - start;
    on_event(Event::Info(run_summary::<B>(
        pretrained, options, total, &backend,
    )));
    on_event(Event::Progress {
        stage: "embed",
        done: 0,
        total,
    });
    let mut embedded = 0;
    let mut first_batch = true;
    loop {
        let pos = start + tok.stats().cells_read;
        if pos >= end {
            break;
        }
        let t_batch = Instant::now();
        let Some(batch) = tok.next_batch(options.batch_size.min(end - pos))? else {
            break;
        };
        if batch.cells.is_empty() {
            // Every cell of the window was skipped (empty cells skipped): no zero-row forward.
            on_event(Event::Progress {
                stage: "embed",
                done: tok.stats().cells_read,
                total,
            });
            continue;
        }
        let emb = match embedder.embed(&batch.values) {
            Ok(e) => e,
            Err(aido_model::ModelError::NonFinite { cell, what }) => {
                let i = batch.cells.get(cell).copied().unwrap_or(cell);
                return Err(PipelineError::NonFinite {
                    input,
                    cell: i,
                    name: tok.source().obs().cell_name(i),
                    what: what.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let flat = emb
            .cells
            .as_slice()
            .ok_or_else(|| PipelineError::option("internal", "non-contiguous embeddings"))?;
        let genes: Vec<f32> = emb
            .genes
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        sink(flat, &genes, &batch.cells)?;
        embedded += batch.cells.len();
        let done = tok.stats().cells_read;
        if first_batch && done < total {
            first_batch = false;
            let per_cell = t_batch.elapsed().as_secs_f64() / batch.cells.len() as f64;
            let plural = |n: usize| if n == 1 { "cell" } else { "cells" };
            on_event(Event::Info(format!(
                "first batch: {} {} in {:.1} s; the other {} {} need about {}",
                batch.cells.len(),
                plural(batch.cells.len()),
                t_batch.elapsed().as_secs_f64(),
                total - done,
                plural(total - done),
                duration_text(per_cell * (total - done) as f64)
            )));
        }
        on_event(Event::Progress {
            stage: "embed",
            done,
            total,
        });
    }
    let stats = tok.stats().clone();
    if let Some(w) = stats.non_integer_warning() {
        on_event(Event::Note(w));
    }
    Ok(EmbedReport {
        model: pretrained.name(),
        input,
        gene_vocabulary: pretrained.genes_from.clone(),
        pooling: options.pooling.name().to_string(),
        precision: options.precision.to_string(),
        cells_in: end - start,
        cells_embedded: embedded,
        cells_skipped_empty: stats.cells_skipped_empty,
        hidden: h,
        genes_matched,
        genes_in_input,
        genes_in_model: vocab.len(),
        gene_embeddings: options.gene_embeddings.clone(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Embeds every cell of `source` into memory.
fn collect<B: Backend>(
    pretrained: &Pretrained,
    source: &mut dyn CellSource,
    options: &EmbedOptions,
    range: Option<(usize, usize)>,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<EmbedOutput> {
    let p = prepare::<B>(pretrained, options, device)?;
    let k = p.positions.len();
    let (mut cells, mut genes, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let report = run(
        p,
        pretrained,
        source,
        options,
        range,
        on_event,
        &mut |c, g, idx| {
            cells.extend_from_slice(c);
            genes.extend_from_slice(g);
            kept.extend_from_slice(idx);
            Ok(())
        },
    )?;
    let (n, h) = (kept.len(), report.hidden);
    let shape_err = |_| PipelineError::option("internal", "embedding shape");
    Ok(EmbedOutput {
        cells: Array2::from_shape_vec((n, h), cells).map_err(shape_err)?,
        genes: Array3::from_shape_vec((n, k, h), genes).map_err(shape_err)?,
        kept,
        report,
    })
}

/// Embeds every cell of any [`CellSource`] into memory (a reader of one's own: e.g. the Python
/// package reads AnnData windows through one).
pub fn embed_source<B: Backend>(
    pretrained: &Pretrained,
    source: &mut dyn CellSource,
    options: &EmbedOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<EmbedOutput> {
    collect::<B>(pretrained, source, options, None, device, on_event)
}

/// Embeds the cells of a matrix held in memory.
/// Events: [`Event::Aligned`], then [`Event::Progress`] per batch, [`Event::Note`] warnings.
pub fn embed_matrix<B: Backend>(
    pretrained: &Pretrained,
    matrix: &CountsMatrix<'_>,
    options: &EmbedOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<EmbedOutput> {
    let mut source = matrix.source();
    collect::<B>(pretrained, &mut source, options, None, device, on_event)
}

/// What an embedding file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputKind {
    /// For an h5ad input written to an h5ad: the whole input plus `obsm/X_aido_cell` (the
    /// default); other inputs get the small file.
    #[default]
    WholeInput,
    /// A small h5ad holding the embedded cells' `obs` and the embeddings only.
    EmbeddingsOnly,
}

impl OutputKind {
    /// [`OutputKind::EmbeddingsOnly`] when `small`, else [`OutputKind::WholeInput`].
    pub fn small_if(small: bool) -> OutputKind {
        if small {
            OutputKind::EmbeddingsOnly
        } else {
            OutputKind::WholeInput
        }
    }
}

/// The output formats of [`embed_file`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutFormat {
    /// AnnData.
    H5ad,
    /// safetensors: `cell_embedding [n, H]`, `cell_index [n]`, `gene_embedding [n, K, H]`.
    Safetensors,
}

impl OutFormat {
    /// The format of `path` by its extension (`.h5ad` or `.safetensors`).
    pub fn of(path: &Path) -> Result<OutFormat> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("h5ad") => Ok(OutFormat::H5ad),
            Some("safetensors") => Ok(OutFormat::Safetensors),
            _ => Err(PipelineError::option(
                "output",
                format!("{}: use a .h5ad or .safetensors file name", path.display()),
            )),
        }
    }
}

/// One of `count` contiguous, near-equal cell ranges (`index` is 0-based): the unit of a
/// sharded embedding run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    /// Shards in all.
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
    pub fn range(self, n: usize) -> (usize, usize) {
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

/// Embeds a cell file (any supported format) into `output` (`.h5ad` or `.safetensors`,
/// written atomically): what `aido embed` runs. With `shard`, only that cell range, to a
/// `.safetensors` shard that [`merge_shards`] assembles.
#[allow(clippy::too_many_arguments)]
pub fn embed_file<B: Backend>(
    pretrained: &Pretrained,
    input: &Path,
    read: &ReadOptions,
    output: &Path,
    kind: OutputKind,
    shard: Option<Shard>,
    options: &EmbedOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<EmbedReport> {
    let format = OutFormat::of(output)?;
    crate::output::check_writable(output, "output")?;
    if shard.is_some() && format != OutFormat::Safetensors {
        return Err(PipelineError::option(
            "shard",
            format!(
                "a shard is written to a .safetensors file (got {}); merging the shards then writes the h5ad",
                output.display()
            ),
        ));
    }
    if let Some(k) = &options.key_added {
        crate::output::check_key_name(k, "key_added")?;
        if format != OutFormat::H5ad {
            return Err(PipelineError::option(
                "key_added",
                format!(
                    "names the obsm key of an .h5ad output; {} is a safetensors file (its tensor is cell_embedding)",
                    output.display()
                ),
            ));
        }
        if options
            .gene_embeddings
            .iter()
            .any(|g| format!("X_aido_gene_{g}") == *k)
        {
            return Err(PipelineError::option(
                "key_added",
                format!("'{k}' is also the obsm key of a gene embedding"),
            ));
        }
    }
    if format == OutFormat::H5ad {
        for g in &options.gene_embeddings {
            aido_tokenize::h5ad_edit::check_key(output, "obsm", &format!("X_aido_gene_{g}"))
                .map_err(|e| PipelineError::option("gene_embeddings", e.to_string()))?;
        }
    }
    let mut source = open_source(input, read)?;
    let n_cells = source.n_cells();
    let range = limit(shard.map_or((0, n_cells), |s| s.range(n_cells)), options)?;
    let limited = range.1 - range.0 < n_cells;
    let would_be_whole = format == OutFormat::H5ad
        && crate::output::whole_input(input, kind == OutputKind::EmbeddingsOnly)?;
    let whole_file = would_be_whole && !limited;
    if would_be_whole && limited && shard.is_none() {
        on_event(Event::Note(format!(
            "`max_cells`: the first {} of {n_cells} cells are embedded, so {} gets those cells' obs and embeddings only (not the whole input)",
            range.1 - range.0,
            output.display()
        )));
    }
    scan_input(input, read, pretrained, options.tokenize, range, whole_file)?;
    let p = prepare::<B>(pretrained, options, device)?;
    let k = p.positions.len();
    match format {
        OutFormat::Safetensors => {
            // Streamed: rows go to the file as they come; the metadata is known up front.
            let mut meta = pretrained_meta(pretrained, input, options);
            if let Some(s) = shard {
                for (key, v) in SHARD_KEYS
                    .iter()
                    .zip([s.index, s.count, range.0, range.1, n_cells])
                {
                    meta.insert(key.to_string(), v.to_string());
                }
            }
            let h = pretrained.config.hidden_size;
            let mut w = embedding_writer(output, h, k, range.1 - range.0, meta)?;
            let (mut genes, mut kept) = (Vec::new(), Vec::new());
            let report = run(
                p,
                pretrained,
                source.as_mut(),
                options,
                Some(range),
                on_event,
                &mut |c, g, idx| {
                    w.write_rows(c)?;
                    genes.extend_from_slice(g);
                    kept.extend_from_slice(idx);
                    Ok(())
                },
            )?;
            finish_embeddings(w, &kept, k, report.hidden, &genes)?;
            on_event(Event::Wrote {
                path: output.to_path_buf(),
                what: "cell_embedding".into(),
            });
            Ok(report)
        }
        OutFormat::H5ad => {
            let (mut cells, mut genes, mut kept) = (Vec::new(), Vec::new(), Vec::new());
            let report = run(
                p,
                pretrained,
                source.as_mut(),
                options,
                Some(range),
                on_event,
                &mut |c, g, idx| {
                    cells.extend_from_slice(c);
                    genes.extend_from_slice(g);
                    kept.extend_from_slice(idx);
                    Ok(())
                },
            )?;
            let obs = || Ok(source.obs().select(&kept));
            write_h5ad(
                input,
                output,
                whole_file,
                n_cells,
                &kept,
                cells,
                &genes,
                &options.gene_embeddings,
                report.hidden,
                report.metadata(),
                options.obsm_key(),
                obs,
                on_event,
            )?;
            on_event(Event::Wrote {
                path: output.to_path_buf(),
                what: format!("obsm/{}", options.obsm_key()),
            });
            Ok(report)
        }
    }
}

/// The metadata of a run, before it ran (the streamed writer needs it first).
fn pretrained_meta(
    pretrained: &Pretrained,
    input: &Path,
    options: &EmbedOptions,
) -> BTreeMap<String, String> {
    EmbedReport {
        model: pretrained.name(),
        input: input.display().to_string(),
        gene_vocabulary: pretrained.genes_from.clone(),
        pooling: options.pooling.name().to_string(),
        precision: options.precision.to_string(),
        cells_in: 0,
        cells_embedded: 0,
        cells_skipped_empty: 0,
        hidden: 0,
        genes_matched: 0,
        genes_in_input: 0,
        genes_in_model: 0,
        gene_embeddings: options.gene_embeddings.clone(),
        seconds: 0.0,
    }
    .metadata()
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

/// Closes an [`embedding_writer`] with the cells' indices and gene embeddings.
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

/// The h5ad output: the whole input plus `obsm/<key>` (and gene embeddings), or a small file of
/// `obs` (of the embedded cells) and the embeddings.
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
    key: &str,
    obs: impl FnOnce() -> Result<aido_tokenize::ObsTable>,
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    let n = kept.len();
    let k = gene_names.len();
    let shape_err = |_| PipelineError::option("internal", "embedding shape");
    let cells = Array2::from_shape_vec((n, h), cells).map_err(shape_err)?;
    let mut obsm = vec![(key.to_string(), cells)];
    for (j, g) in gene_names.iter().enumerate() {
        let col: Vec<f32> = (0..n)
            .flat_map(|c| genes[(c * k + j) * h..(c * k + j + 1) * h].iter().copied())
            .collect();
        obsm.push((
            format!("X_aido_gene_{g}"),
            Array2::from_shape_vec((n, h), col).map_err(shape_err)?,
        ));
    }
    // The run's metadata: `uns/aido_embed_<field>` strings for the default key; for another
    // key, scanpy's way (`uns[key_added]` = the parameters), so that a second embedding
    // written beside the first keeps the first one's record.
    let uns = if key == DEFAULT_EMBED_KEY {
        meta.into_iter()
            .map(|(k, v)| (format!("aido_embed_{k}"), UnsValue::Str(v)))
            .collect()
    } else {
        vec![(
            key.to_string(),
            UnsValue::Dict(
                meta.into_iter()
                    .map(|(k, v)| (k, UnsValue::Str(v)))
                    .collect(),
            ),
        )]
    };
    let add = H5adAdditions {
        obsm,
        uns,
        ..Default::default()
    };
    crate::output::write_results(input, output, whole_file, n_cells, kept, add, obs, on_event)
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
    let bad = |d: String| PipelineError::option("shards", format!("{}: {d}", path.display()));
    let bytes = std::fs::read(path).map_err(PipelineError::io(path))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|_| bad("not a safetensors file".into()))?;
    let meta: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let num = |key: &str| -> Result<usize> {
        meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
            bad(format!(
                "no '{key}' in its metadata: not a shard of a sharded embedding run"
            ))
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
        return Err(bad(format!(
            "shard {}/{} of {total} cells should cover {:?}, its metadata says {start}..{end}",
            shard.index,
            shard.count,
            if shard.count > 0 {
                shard.range(total)
            } else {
                (0, 0)
            }
        )));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|_| bad("not a safetensors file".into()))?;
    let tensor = |name: &str| {
        st.tensor(name)
            .map_err(|_| bad(format!("no tensor '{name}'")))
    };
    let ce = tensor("cell_embedding")?;
    let &[m, h] = ce.shape() else {
        return Err(bad("cell_embedding is not 2-D".into()));
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
        return Err(bad(format!(
            "cell_index does not match its {m} embeddings within cells {start}..{end}"
        )));
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

/// What [`merge_shards`] assembled.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Cells in the output.
    pub cells: usize,
    /// Shards merged.
    pub shards: usize,
}

/// Assembles the shards of one sharded run ([`embed_file`] with a [`Shard`]) into the output
/// the unsharded run writes (the same bytes). Missing, duplicate or mismatched shards are
/// refused before anything is written. `key_added`: the obsm key of an h5ad output (`None`:
/// `X_aido_cell`). Events: an [`Event::Note`] when the results replace entries of the input.
pub fn merge_shards(
    shards: &[PathBuf],
    output: &Path,
    kind: OutputKind,
    key_added: Option<&str>,
    on_event: &mut dyn FnMut(Event),
) -> Result<MergeReport> {
    let format = OutFormat::of(output)?;
    crate::output::check_writable(output, "output")?;
    if let Some(k) = key_added {
        crate::output::check_key_name(k, "key_added")?;
        if format != OutFormat::H5ad {
            return Err(PipelineError::option(
                "key_added",
                format!(
                    "names the obsm key of an .h5ad output; {} is a safetensors file",
                    output.display()
                ),
            ));
        }
    }
    if shards.is_empty() {
        return Err(PipelineError::option("shards", "no shard given"));
    }
    let mut shards = shards
        .iter()
        .map(|p| read_shard(p))
        .collect::<Result<Vec<_>>>()?;
    shards.sort_by_key(|s| s.shard.index);
    let bad = |d: String| PipelineError::option("shards", d);
    let first = &shards[0];
    for s in &shards[1..] {
        if s.shard.count != first.shard.count || s.total != first.total || s.h != first.h {
            return Err(bad(format!(
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
            )));
        }
        if let Some(key) = first
            .meta
            .keys()
            .chain(s.meta.keys())
            .find(|k| first.meta.get(*k) != s.meta.get(*k))
        {
            return Err(bad(format!(
                "{} and {} differ in '{key}' ({:?} vs {:?}): not shards of one run",
                first.path.display(),
                s.path.display(),
                first.meta.get(key),
                s.meta.get(key)
            )));
        }
    }
    for w in shards.windows(2) {
        if w[0].shard.index == w[1].shard.index {
            return Err(bad(format!(
                "{} and {} are both shard {}/{}",
                w[0].path.display(),
                w[1].path.display(),
                w[0].shard.index,
                w[0].shard.count
            )));
        }
    }
    let n_shards = first.shard.count;
    let have: Vec<usize> = shards.iter().map(|s| s.shard.index).collect();
    let missing: Vec<String> = (0..n_shards)
        .filter(|i| !have.contains(i))
        .map(|i| format!("{i}/{n_shards}"))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "missing shard(s) {} of the {n_shards} (cells {}..{} of {})",
            missing.join(", "),
            first.range.0,
            first.range.1,
            first.total
        )));
    }
    let (h, n_cells, meta) = (first.h, first.total, first.meta.clone());
    let gene_names: Vec<String> = meta
        .get("gene_embedding_genes")
        .map(|g| g.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let k = gene_names.len();
    let input = PathBuf::from(
        meta.get("input")
            .ok_or_else(|| bad("the shards record no input".into()))?,
    );
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
            let mut w = embedding_writer(output, h, k, n_cells, meta)?;
            w.write_rows(&cells)?;
            finish_embeddings(w, &kept, k, h, &genes)?;
        }
        OutFormat::H5ad => {
            let whole_file =
                kind == OutputKind::WholeInput && InputFormat::detect(&input)? == InputFormat::H5ad;
            if !input.exists() {
                return Err(bad(format!(
                    "the input {} recorded in the shards is not found from here (merge where the shards were embedded)",
                    input.display()
                )));
            }
            let obs = || -> Result<aido_tokenize::ObsTable> {
                let src = open_source(&input, &Default::default())?;
                Ok(src.obs().select(&kept))
            };
            write_h5ad(
                &input,
                output,
                whole_file,
                n_cells,
                &kept,
                cells,
                &genes,
                &gene_names,
                h,
                meta,
                key_added.unwrap_or(DEFAULT_EMBED_KEY),
                obs,
                on_event,
            )?;
        }
    }
    Ok(MergeReport {
        cells: kept.len(),
        shards: n_shards,
    })
}
