//! `aido demo`: simulate → pretrain a tiny model (RDA) → embed → cluster, next to the
//! expression baseline, on embedded data (no files needed).

use std::path::{Path, PathBuf};

use aido_pipeline::demo::DemoOptions;
use anyhow::{Context, Result, bail};
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
    /// Keep the demo's files in this folder (default: a temporary folder, removed afterwards).
    #[arg(long)]
    out: Option<PathBuf>,
    /// RNG seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Pretraining updates of the demo model.
    #[arg(long, default_value_t = 60)]
    steps: u64,
}

pub(crate) fn cmd_demo(a: &DemoArgs) -> Result<()> {
    let tmp;
    let dir = match &a.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.path().to_path_buf()
        }
    };
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
    outln!(
        "UMAPs: {} and {}",
        dir.join("demo_embedding_umap.png").display(),
        dir.join("demo_expression_umap.png").display()
    );
    if a.out.is_none() {
        outln!("(files were in a temporary folder; pass --out DIR to keep them)");
    }
    Ok(())
}

/// A temporary folder removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempdir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("aido-demo-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    bail!("could not create a temporary folder in {}", base.display())
}
