//! `aido demo`: simulate → pretrain a tiny model (RDA) → embed → cluster, next to the
//! expression baseline, on embedded data (no files needed).

use std::path::{Path, PathBuf};

use aido_model::Cpu;
use aido_model::burn::backend::Autodiff;
use aido_pipeline::cluster::{ClusterFiles, ClusterOptions, cluster_file};
use aido_pipeline::embed::{EmbedOptions, OutputKind, embed_file};
use aido_pipeline::{ModelSource, OpenOptions, Pretrained, ignore_events};
use aido_tokenize::simulate::{SimulationConfig, synthetic_gene_names};
use aido_tokenize::{GeneIdMode, GeneVocab, ReadOptions};
use aido_train::{CellCorpus, Preset, PretrainJob, TrainConfig, pretrain};
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
    // Simulated counts with cell types and two batches over a synthetic panel.
    let data = dir.join("demo.h5ad");
    let panel = dir.join("demo_genes.tsv");
    let mut sim = SimulationConfig::new(a.cells, 5, a.seed);
    sim.n_batches = 2;
    let s = aido_pipeline::simulate::write_cells(&sim, synthetic_gene_names(a.genes), &data)
        .map_err(pipeline_error)?;
    let genes = GeneVocab::from_names(s.genes)?;
    genes.write_tsv(&panel)?;
    outln!(
        "wrote {}: {} cells × {} genes, 5 cell types, 2 batches",
        data.display(),
        s.cells,
        genes.len()
    );
    // Short RDA pretraining of a tiny model over the simulated panel.
    let model_dir = dir.join("demo_model");
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir)
            .with_context(|| format!("removing the previous demo model {}", model_dir.display()))?;
    }
    let mut config = TrainConfig {
        steps: a.steps,
        batch_size: 8,
        seed: a.seed,
        val_every: a.steps.div_ceil(2).max(1),
        checkpoint_every: a.steps.max(1),
        ..TrainConfig::default()
    };
    config.model.preset = Preset::Tiny;
    config.optim.lr = 1e-3;
    config.validate()?;
    let corpus = CellCorpus::load(
        std::slice::from_ref(&data),
        &genes,
        &ReadOptions::default(),
        GeneIdMode::Auto,
    )?;
    let job = PretrainJob {
        config,
        corpus: corpus.into(),
        genes: genes.clone(),
        out: model_dir.clone(),
        resume: false,
        nodes: None,
    };
    let summary = pretrain::<Autodiff<Cpu>>(job, &[Default::default()], &mut |_| {})
        .with_context(|| format!("pretraining into {}", model_dir.display()))?;
    outln!(
        "pretrained {} updates, validation loss {:.4}; weights in {}",
        summary.steps,
        summary.final_val_loss,
        model_dir.display()
    );
    // Embeddings of every cell: the simulated file plus obsm/X_aido_cell.
    let out = dir.join("demo_embeddings.h5ad");
    let device = Default::default();
    let model = Pretrained::open(
        &ModelSource::Folder(model_dir),
        &OpenOptions::default(),
        &mut ignore_events,
    )
    .map_err(pipeline_error)?;
    let options = EmbedOptions {
        batch_size: 16,
        ..EmbedOptions::default()
    };
    let r = embed_file::<Cpu>(
        &model,
        &data,
        &ReadOptions::default(),
        &out,
        OutputKind::WholeInput,
        None,
        &options,
        &device,
        &mut ignore_events,
    )
    .map_err(pipeline_error)?;
    outln!(
        "embedded {} cells → obsm/X_aido_cell [{} × {}] in {} ({:.1} cells/s)",
        r.cells_embedded,
        r.cells_embedded,
        r.hidden,
        out.display(),
        r.cells_embedded as f64 / r.seconds.max(1e-9)
    );
    // The paper's first result: zero-shot clustering of the embeddings, next to the
    // expression baseline on the same cells.
    let mut rows = Vec::new();
    for (what, embedding) in [
        ("AIDO.Cell embedding", Some("X_aido_cell")),
        ("expression baseline", None),
    ] {
        let tag = if embedding.is_some() {
            "embedding"
        } else {
            "expression"
        };
        let files = ClusterFiles {
            embedding: embedding.map(str::to_string),
            read: ReadOptions::default(),
            report: Some(dir.join(format!("demo_{tag}_report.json"))),
            umap_png: Some(dir.join(format!("demo_{tag}_umap.png"))),
        };
        let options = ClusterOptions {
            label_column: Some("cell_type".into()),
            batch_column: Some("batch".into()),
            ..ClusterOptions::default()
        };
        let c = cluster_file(
            &out,
            &dir.join(format!("demo_{tag}_clusters.h5ad")),
            &files,
            &options,
            &mut ignore_events,
        )
        .map_err(pipeline_error)?;
        rows.push((what, c.report));
    }
    outln!(
        "zero-shot clustering against the simulated cell types (Leiden searched to 5 clusters):"
    );
    outln!(
        "  {:<22} {:>8} {:>7} {:>7} {:>10} {:>10}",
        "",
        "clusters",
        "ARI",
        "NMI",
        "label ASW",
        "batch ASW"
    );
    for (what, r) in &rows {
        outln!(
            "  {what:<22} {:>8} {:>7.3} {:>7.3} {:>10.3} {:>10.3}",
            r.n_clusters,
            r.ari.unwrap_or(f64::NAN),
            r.nmi.unwrap_or(f64::NAN),
            r.label_asw.unwrap_or(f64::NAN),
            r.batch_asw.unwrap_or(f64::NAN)
        );
    }
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
