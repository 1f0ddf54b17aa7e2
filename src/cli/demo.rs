//! `aido demo`: simulate → pretrain a tiny model (RDA) → embed → cluster, next to the
//! expression baseline, on embedded data (no files needed).

use std::path::PathBuf;

use aido_pipeline::demo::DemoOptions;
use anyhow::{Context, Result};
use clap::Args;

use super::pipeline_error;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Cells to simulate.
    #[arg(long, default_value_t = 400)]
    cells: usize,
    /// Genes in the synthetic panel (the model's sequence is this + 2).
    #[arg(long, default_value_t = 1000)]
    genes: usize,
    /// The demo's files (data, model, embeddings, clusters, UMAP pictures, reports) go here.
    #[arg(long, default_value = "aido-demo")]
    out: PathBuf,
    /// RNG seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Pretraining updates of the demo model.
    #[arg(long, default_value_t = 60)]
    steps: u64,
}

pub(crate) fn cmd_demo(a: &DemoArgs) -> Result<()> {
    let dir = a.out.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    outln!(
        "aido demo: simulate → pretrain a tiny model (RDA) → embed → cluster, next to the expression baseline (files in {})",
        dir.display()
    );
    let r = aido_pipeline::demo::run(
        &dir,
        &DemoOptions {
            cells: a.cells,
            genes: a.genes,
            seed: a.seed,
            steps: a.steps,
        },
        &mut |e| {
            if let aido_pipeline::Event::Wrote { path, what } = e {
                outln!("wrote {}: {what}", path.display());
            }
        },
    )
    .map_err(pipeline_error)?;
    let e = &r.embed;
    outln!(
        "pretrained {} updates (validation loss {:.4}); embedded {} cells → obsm/X_aido_cell [{} × {}] ({:.1} cells/s)",
        r.pretrain_steps,
        r.pretrain_val_loss,
        e.cells_embedded,
        e.cells_embedded,
        e.hidden,
        e.cells_embedded as f64 / e.seconds.max(1e-9)
    );
    outln!("{r}");
    outln!("{}", r.explanation());
    outln!(
        "UMAPs: {} and {}",
        dir.join("demo_embedding_umap.png").display(),
        dir.join("demo_expression_umap.png").display()
    );
    Ok(())
}
