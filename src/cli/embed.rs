//! `aido embed` and `aido merge`: flags → [`aido_pipeline::embed_file`] / [`merge_shards`].

use std::path::PathBuf;

use aido_model::Pooling;
use aido_model::burn::prelude::Backend;
use aido_pipeline::embed::{EmbedOptions, OutFormat, OutputKind, Shard, merge_shards};
use aido_pipeline::{EmbedReport, ModelSource, OnDevice, Pretrained, on_device};
use anyhow::{Result, bail};
use clap::Args;

use super::{ComputeArgs, EventPrinter, InputArgs, pipeline_error};

/// Flags of `aido embed`.
#[derive(Args, Clone)]
pub(crate) struct EmbedArgs {
    /// The model: a checkpoint folder (config.json + model.safetensors or pytorch_model.bin
    /// [+ genes.tsv]) or a Hugging Face id ORG/NAME[@REVISION] (e.g. genbio-ai/AIDO.Cell-3M),
    /// from the hub cache (HF_HUB_CACHE, HF_HOME) or downloaded into it (HF_HUB_OFFLINE=1: the
    /// cache only).
    #[arg(long)]
    pub model: ModelSource,
    #[command(flatten)]
    pub input: InputArgs,
    /// Gene vocabulary TSV of the checkpoint (default: MODEL/genes.tsv, else the built-in
    /// 19,264-gene AIDO.Cell list for a 19,266-position model).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    /// Cell embedding pooling: present-mean (default), mean, present-only-mean or max.
    #[arg(long, default_value = "present-mean")]
    pub pooling: Pooling,
    /// Cells per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Embed only the first N cells (a trial run on a large file: the output then holds
    /// those cells only, never the whole input).
    #[arg(long, value_name = "N")]
    pub max_cells: Option<usize>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Output: .h5ad (an h5ad input copied whole plus obsm/X_aido_cell; see
    /// --embeddings-only) or .safetensors (tensor `cell_embedding` [n_cells, H]).
    #[arg(long)]
    pub output: PathBuf,
    /// With an .h5ad output: write a small file holding only obs and the embeddings instead
    /// of the whole input plus the embeddings.
    #[arg(long)]
    pub embeddings_only: bool,
    /// The obsm key of the cell embeddings in an .h5ad output (scanpy's key_added; default
    /// X_aido_cell). An existing entry of that name is replaced, and the run says so.
    #[arg(long, value_name = "KEY")]
    pub key_added: Option<String>,
    /// Also write contextual embeddings of these genes (comma-separated symbols of the vocabulary).
    #[arg(long, value_delimiter = ',')]
    pub gene_embeddings: Vec<String>,
    /// Embed only shard I of N (0-based): cells [⌊I·n/N⌋, ⌊(I+1)·n/N⌋) of the file, written
    /// to a .safetensors shard; `aido merge` assembles the shards into the output one run
    /// would have written (e.g. `--shard $SLURM_ARRAY_TASK_ID/$N`).
    #[arg(long)]
    pub shard: Option<Shard>,
}

struct EmbedRun<'a> {
    a: &'a EmbedArgs,
    pretrained: Pretrained,
    options: EmbedOptions,
    verbose: bool,
}

impl OnDevice for EmbedRun<'_> {
    type Output = EmbedReport;
    fn run<B: Backend>(self, device: B::Device) -> aido_pipeline::Result<EmbedReport> {
        let a = self.a;
        let mut events = EventPrinter::new(self.verbose, "embed");
        aido_pipeline::embed_file::<B>(
            &self.pretrained,
            &a.input.input,
            &a.input.read_options(),
            &a.output,
            OutputKind::small_if(a.embeddings_only),
            a.shard,
            &self.options,
            &device,
            &mut |e| events.show(e),
        )
    }
}

/// Runs `aido embed`.
pub(crate) fn cmd_embed(a: &EmbedArgs, verbose: bool) -> Result<EmbedReport> {
    let format = OutFormat::of(&a.output).map_err(pipeline_error)?;
    if a.shard.is_some() && format != OutFormat::Safetensors {
        bail!(
            "--shard writes a .safetensors shard (got --output {}); `aido merge --output OUT.h5ad SHARD...` then writes the h5ad",
            a.output.display()
        );
    }
    a.compute.device.ensure_compiled()?;
    let options = EmbedOptions {
        pooling: a.pooling,
        batch_size: a.batch_size,
        precision: a.compute.precision,
        tokenize: a.input.options()?,
        gene_embeddings: a.gene_embeddings.clone(),
        max_cells: a.max_cells,
        key_added: a.key_added.clone(),
    };
    let pretrained = super::render::open_model(&a.model, &a.genes, verbose)?;
    let r = on_device(
        a.compute.device,
        EmbedRun {
            a,
            pretrained,
            options,
            verbose,
        },
    )
    .map_err(pipeline_error)?;
    if verbose {
        if r.cells_skipped_empty > 0 {
            eprintln!(
                "skipped {} cells with no counts in the aligned genes",
                r.cells_skipped_empty
            );
        }
        let what = match format {
            OutFormat::H5ad => format!("obsm/{}", options_key(&a.key_added)),
            OutFormat::Safetensors => "cell_embedding".to_string(),
        };
        outln!("wrote {}: {what} {r}", a.output.display());
    }
    Ok(r)
}

/// The obsm key an h5ad output gets.
fn options_key(key_added: &Option<String>) -> &str {
    key_added
        .as_deref()
        .unwrap_or(aido_pipeline::embed::DEFAULT_EMBED_KEY)
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
    /// The obsm key of the cell embeddings in an .h5ad output (default X_aido_cell).
    #[arg(long, value_name = "KEY")]
    pub key_added: Option<String>,
    /// The shards written by `aido embed --shard I/N`, in any order; all N are needed.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

/// `aido merge`: the shards of one `aido embed --shard I/N` run, assembled into the output the
/// unsharded run writes (the same bytes).
pub(crate) fn cmd_merge(a: &MergeArgs) -> Result<()> {
    let mut events = EventPrinter::new(true, "merge");
    let r = merge_shards(
        &a.shards,
        &a.output,
        OutputKind::small_if(a.embeddings_only),
        a.key_added.as_deref(),
        &mut |e| events.show(e),
    )
    .map_err(pipeline_error)?;
    outln!(
        "wrote {}: {} cells from {} shards",
        a.output.display(),
        r.cells,
        r.shards
    );
    Ok(())
}
