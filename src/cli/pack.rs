//! `aido pack` and `aido orchestrator`: flags → [`aido_train::pack`] and burn's collective
//! orchestrator.

use std::path::PathBuf;

use aido_train::{PackOptions, pack};
use anyhow::{Context, Result};
use clap::Args;

/// Flags of `aido pack`.
#[derive(Args, Clone)]
pub(crate) struct PackArgs {
    /// Raw-count input (.h5ad, 10x .h5, Matrix Market folder, .csv/.tsv); repeat for several.
    #[arg(long = "input", visible_alias = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// The gene list to align to (TSV, `gene_name` column): the panel of the models trained on
    /// the corpus.
    #[arg(long)]
    pub genes: PathBuf,
    /// The corpus folder to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Cells per shard.
    #[arg(long, default_value_t = 10_000)]
    pub cells_per_shard: usize,
    #[command(flatten)]
    pub read: super::ReadArgs,
}

/// Runs `aido pack`.
pub(crate) fn cmd_pack(a: &PackArgs) -> Result<()> {
    let genes = aido_tokenize::GeneVocab::from_tsv(&a.genes)?;
    let opts = PackOptions {
        cells_per_shard: a.cells_per_shard,
        read: a.read.read_options(),
        gene_id: a.read.gene_id,
    };
    let t0 = std::time::Instant::now();
    let ix = pack(&a.data, &genes, &opts, &a.out, &mut |f| {
        eprintln!("{}: {} cells; {}", f.path.display(), f.cells, f.alignment);
        if f.skipped_empty > 0 {
            eprintln!(
                "{}: {} cells without counts in the gene list were left out",
                f.path.display(),
                f.skipped_empty
            );
        }
    })
    .with_context(|| format!("packing into {}", a.out.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    outln!(
        "packed {} cells ({} non-zeros, {} genes) into {} shards in {}: {:.0} cells/s (aido pretrain --corpus {})",
        ix.n_cells,
        ix.nnz,
        ix.genes.len(),
        ix.shards.len(),
        a.out.display(),
        ix.n_cells as f64 / secs.max(1e-9),
        a.out.display()
    );
    Ok(())
}

/// Flags of `aido orchestrator`.
#[derive(Args, Clone)]
pub(crate) struct OrchestratorArgs {
    /// Port to listen on (all interfaces); the nodes pass `--orchestrator HOST:PORT`.
    #[arg(long)]
    pub port: u16,
}

/// Runs `aido orchestrator` until it is interrupted (Ctrl-C / SIGTERM).
pub(crate) fn cmd_orchestrator(a: &OrchestratorArgs) -> Result<()> {
    // burn's orchestrator logs a failed bind and returns: check the port first, for a clear
    // error.
    std::net::TcpListener::bind(("0.0.0.0", a.port))
        .with_context(|| format!("the orchestrator cannot listen on port {}", a.port))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the orchestrator's runtime")?;
    eprintln!(
        "orchestrator listening on port {} (experimental multi-node training; Ctrl-C stops it)",
        a.port
    );
    rt.block_on(burn_collective::start_global_orchestrator(a.port));
    Ok(())
}
