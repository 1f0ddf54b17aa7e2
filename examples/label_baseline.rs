//! Scores a label-aware reference predictor on the validation examples of a finished
//! `aido pretrain` run: each masked gene is predicted by its mean high-depth target among the
//! training cells *of the same cell type*. The model is never told the cell type; this reference
//! is. Printed next to the run's final validation loss and its gene-mean baseline.
//!
//! ```text
//! cargo run --release --example label_baseline -- --run OUT --genes GENES.tsv \
//!     --label-column cell_type[,celltype] --data FILE [--data FILE ...]
//! ```
//! The data files and gene list must be the run's (same order); the split, RDA examples and
//! seeds are rebuilt from `OUT/train_config.json`. Each file uses the first listed `obs` column
//! it has.

use std::collections::HashMap;
use std::path::PathBuf;

use aido::tokenize::{GeneVocab, ReadOptions, open_source};
use aido::train::baselines::{baselines, group_mean_loss};
use aido::train::{CellCorpus, TrainConfig, read_metrics};
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut it = std::env::args().skip(1);
    let (mut run, mut genes, mut cols, mut data) = (None, None, Vec::new(), Vec::new());
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--run" => run = Some(PathBuf::from(val()?)),
            "--genes" => genes = Some(PathBuf::from(val()?)),
            "--label-column" => cols = val()?.split(',').map(str::to_string).collect(),
            "--data" => data.push(PathBuf::from(val()?)),
            o => bail!("unknown argument {o}"),
        }
    }
    let usage = "usage: label_baseline --run OUT --genes GENES.tsv --label-column COL[,COL2] --data FILE [--data FILE ...]";
    let run = run.context(usage)?;
    let genes = GeneVocab::from_tsv(genes.context(usage)?)?;
    if cols.is_empty() || data.is_empty() {
        bail!("{usage}");
    }
    let cfg_path = run.join("train_config.json");
    let cfg: TrainConfig = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path).with_context(|| cfg_path.display().to_string())?,
    )
    .with_context(|| cfg_path.display().to_string())?;
    let corpus = CellCorpus::load(&data, &genes, &ReadOptions::default(), Default::default())?;
    let split = corpus.split(cfg.val_fraction, cfg.max_val_cells, cfg.seed);
    let samplers = corpus.samplers(cfg.rda, cfg.seed)?;

    // Labels of every corpus cell, from its file's obs.
    let mut per_set = Vec::new();
    for p in &data {
        let src = open_source(p, &ReadOptions::default())?;
        let obs = src.obs();
        let col = cols
            .iter()
            .find_map(|c| obs.column(c))
            .with_context(|| format!("{}: none of the obs columns {cols:?}", p.display()))?;
        per_set.push((0..obs.len()).map(|i| col.display(i)).collect::<Vec<_>>());
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    let group: Vec<usize> = (0..corpus.len())
        .map(|id| {
            let (s, row) = corpus.source_cell(id);
            let n = ids.len();
            *ids.entry(per_set[s][row].clone()).or_insert(n)
        })
        .collect();
    let label = group_mean_loss(
        &corpus,
        &samplers,
        &split.train,
        &split.val,
        &|id| group[id],
        ids.len(),
    )?;
    let base = baselines(&corpus, &samplers, &split.train, &split.val)?;
    let metrics = read_metrics(&run.join("metrics.jsonl"))?;
    let final_val = metrics.iter().rev().find_map(|m| m.val_loss);
    println!(
        "{}",
        serde_json::json!({
            "run": run.display().to_string(),
            "labels": ids.len(),
            "val_cells": split.val.len(),
            "model_final_val_loss": final_val,
            "gene_mean": base.gene_mean,
            "label_gene_mean": label,
        })
    );
    Ok(())
}
