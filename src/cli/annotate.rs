//! `aido finetune` and `aido predict`: cell-type annotation (SPEC-tasks §1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_eval::metrics::classify::{ClassificationReport, classification_report};
use aido_eval::plot::confusion_png;
use aido_model::Pooling;
use aido_model::attention::AttentionBackend;
use aido_model::backend::DeviceKind;
use aido_model::burn::backend::Autodiff;
use aido_model::burn::tensor::backend::{AutodiffBackend, Backend};
use aido_model::load::{LoadMode, load_checkpoint};
use aido_tasks::baselines::{fit_logreg, knn_vote, pca_features};
use aido_tasks::finetune::{argmax_rows, cache_bytes, cache_kind};
use aido_tasks::{
    CellTypeClassifier, CellTypeHeadConfig, ClassWeights, ClassifierInfo, DataSplit, Event,
    FinetuneConfig, FinetuneJob, TokenizedCells, finetune, load_classifier, save_classifier,
    split_from_values, stratified_split,
};
use aido_tokenize::h5ad_edit::{H5adAdditions, UnsValue, write_input_plus};
use aido_tokenize::h5ad_out::H5adWriter;
use aido_tokenize::{GeneVocab, InputFormat, ObsColumn, Tokenizer, open_source, read_all};
use aido_train::finetune::{Trainable, prepare};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use ndarray::Array2;
use serde_json::{Value, json};

use super::InputArgs;
use super::analysis::{obs_labels, write_json};

/// Flags of `aido finetune`.
#[derive(Args, Clone)]
pub(crate) struct FinetuneArgs {
    /// Pretrained checkpoint folder (config.json + model.safetensors, + genes.tsv).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// obs column with the cell types.
    #[arg(long)]
    pub label_column: String,
    /// Output folder: report.json, confusion.png, classifier/, checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    /// obs column holding train / val / test for every cell (instead of a random split).
    #[arg(long, conflicts_with_all = ["val_fraction", "test_fraction"])]
    pub split_column: Option<String>,
    /// Fraction of every class held out for validation (model selection).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction of every class held out for the test.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split, the head's initialization, the epoch order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Gene vocabulary TSV of the checkpoint (default: MODEL/genes.tsv).
    #[arg(long)]
    pub genes: Option<PathBuf>,
    /// What of the backbone trains: frozen (head only), last:K (the paper: last:1), full,
    /// lora:R[:ALPHA].
    #[arg(long, default_value = "last:1")]
    pub trainable: String,
    /// Pooling of the encoder output: max (over genes, the paper's head), mean, present-mean.
    #[arg(long, default_value = "max")]
    pub pooling: Pooling,
    /// Width of the head's hidden layer.
    #[arg(long, default_value_t = 256)]
    pub head_hidden: usize,
    /// Dropout after the head's ReLU.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Leave out the head's non-affine batch norm (scFoundation's head; on by default: it
    /// removes the component all cells' pooled embeddings share, which otherwise dominates
    /// them and stalls the head — see docs/BENCHMARKS.md).
    #[arg(long)]
    pub no_batch_norm: bool,
    /// Class weights of the loss: capped:CAP (min(N_max/N_i, CAP)), balanced, none.
    #[arg(long, default_value = "capped:50")]
    pub class_weights: ClassWeights,
    /// Maximum epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Cells per update.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Learning rate (AdamW, constant).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Stop after this many epochs without a better validation macro-F1 (0: never).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Also run the expression baselines (logistic regression and 10-NN on 50 PCs) on the
    /// same split.
    #[arg(long)]
    pub baselines: bool,
    /// Compute device: cpu, cuda (build feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Compute precision: f32, or bf16 (mixed: bf16 projections; f32 master weights,
    /// optimizer state, norms, softmax statistics and loss; cpu and cuda).
    #[arg(long, default_value = "f32")]
    pub precision: aido_model::Precision,
    /// Continue the run in OUTDIR from its last epoch checkpoint (same flags and data).
    #[arg(long)]
    pub resume: bool,
    /// Recompute the frozen part of the backbone every epoch instead of caching it.
    #[arg(long)]
    pub no_cache: bool,
    /// Largest frozen-prefix cache in GiB (default: half of the available memory); a larger
    /// one is not built and every epoch recomputes the backbone.
    #[arg(long)]
    pub cache_limit_gb: Option<f64>,
}

/// Flags of `aido predict`.
#[derive(Args, Clone)]
pub(crate) struct PredictArgs {
    /// Classifier folder written by `aido finetune` (OUTDIR/classifier).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Output .h5ad: the whole input (h5ad) plus obs/aido_cell_type,
    /// obs/aido_cell_type_confidence, obsm/aido_cell_type_proba, uns/aido_cell_type_classes.
    #[arg(long)]
    pub output: PathBuf,
    /// Cells per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Compute device: cpu, cuda or wgpu.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Compute precision: f32, or bf16 (mixed: bf16 projections; f32 norms, softmax
    /// statistics and outputs; cpu and cuda).
    #[arg(long, default_value = "f32")]
    pub precision: aido_model::Precision,
}

fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `aido finetune` on the device the flags name.
pub(crate) fn cmd_finetune(a: &FinetuneArgs, verbose: bool) -> Result<()> {
    a.device.ensure_compiled()?;
    match a.device {
        DeviceKind::Cpu => finetune_on::<Autodiff<aido_model::Cpu>>(Default::default(), a, verbose),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            finetune_on::<Autodiff<aido_model::backend::Cuda>>(Default::default(), a, verbose)
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => {
            finetune_on::<Autodiff<aido_model::backend::Wgpu>>(Default::default(), a, verbose)
        }
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

fn vocabulary(model: &Path, genes: &Option<PathBuf>) -> Result<(GeneVocab, PathBuf)> {
    let p = match genes {
        Some(g) => g.clone(),
        None => {
            let p = model.join("genes.tsv");
            if !p.is_file() {
                bail!(
                    "no gene list for {}: pass --genes GENES.tsv or put genes.tsv in the checkpoint folder",
                    model.display()
                );
            }
            p
        }
    };
    Ok((GeneVocab::from_tsv(&p)?, p))
}

fn obs_strings(c: &ObsColumn) -> Vec<String> {
    (0..c.len()).map(|i| c.display(i)).collect()
}

fn finetune_on<B>(device: B::Device, a: &FinetuneArgs, verbose: bool) -> Result<()>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
{
    let t0 = Instant::now();
    let cfg = FinetuneConfig {
        trainable: a.trainable.clone(),
        pooling: a.pooling.name().to_string(),
        head_hidden: a.head_hidden,
        dropout: a.dropout,
        batch_norm: !a.no_batch_norm,
        class_weights: a.class_weights,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        patience: a.patience,
        seed: a.seed,
        cache: !a.no_cache,
    };
    cfg.validate()?;
    let trainable: Trainable = cfg.trainable()?;
    let out_has_files = a.out.is_dir()
        && std::fs::read_dir(&a.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
    if a.out.exists() && !a.out.is_dir() {
        bail!("--out {}: exists and is not a folder", a.out.display());
    }
    if a.resume && !out_has_files {
        bail!(
            "--resume: {} holds no run to resume (start without --resume)",
            a.out.display()
        );
    }
    if out_has_files && !a.resume {
        bail!(
            "--out {}: the folder exists and is not empty; pass --resume to continue its run, or choose a new folder",
            a.out.display()
        );
    }
    // the model, the labels, the split: all checked before anything is written
    let (vocab, genes_path) = vocabulary(&a.model, &a.genes)?;
    let (mut pre, mcfg) = load_checkpoint::<B>(&a.model, LoadMode::EncoderOnly, &device)?;
    pre.bert.set_precision(a.precision)?;
    if vocab.seq_len() != mcfg.seq_len() {
        bail!(
            "{} lists {} genes but the checkpoint {} has {} gene positions: use the gene list the model was trained with",
            genes_path.display(),
            vocab.len(),
            a.model.display(),
            mcfg.seq_len() - 2
        );
    }
    let bert = prepare(pre.bert, &trainable, &device)?;
    let file = &a.input.input;
    let mut source = open_source(file, &a.input.read_options())?;
    let n_cells = source.n_cells();
    let labels = obs_labels(source.obs(), file, &a.label_column)?;
    if labels.n_distinct() < 2 {
        bail!(
            "{}: obs/{} has a single class ('{}'): a classifier needs at least two",
            file.display(),
            a.label_column,
            labels.names.first().map_or("", String::as_str)
        );
    }
    let classes = labels.names.clone();
    let split = match &a.split_column {
        Some(col) => {
            let c = source
                .obs()
                .column(col)
                .with_context(|| format!("{}: obs has no split column '{col}'", file.display()))?;
            let obs = source.obs();
            split_from_values(
                &obs_strings(c),
                col,
                &|i| obs.cell_name(i),
                &labels.codes,
                &classes,
            )
            .with_context(|| format!("{}", file.display()))?
        }
        None => stratified_split(
            &labels.codes,
            &classes,
            a.val_fraction,
            a.test_fraction,
            a.seed,
        )
        .with_context(|| format!("{}: obs/{}", file.display(), a.label_column))?,
    };
    let cell_names: Vec<String> = (0..n_cells).map(|i| source.obs().cell_name(i)).collect();
    // tokenize every cell once
    let mut tok = Tokenizer::new(source.as_mut(), &vocab, a.input.options_for(&vocab)?)?;
    if verbose {
        eprintln!("{}", tok.report());
    }
    let present = tok.alignment().present().to_vec();
    let pb = if verbose {
        super::progress(n_cells as u64, "tokenize")
    } else {
        ProgressBar::hidden()
    };
    let mut data = TokenizedCells::new(present.len());
    while let Some(b) = tok.next_batch(256)? {
        data.push_batch(&b);
        pb.set_position(tok.stats().cells_read as u64);
    }
    pb.finish_and_clear();
    drop(tok);
    // split in rows of the tokenized store (cells skipped as empty drop out)
    let mut row_of = vec![usize::MAX; n_cells];
    for (r, &c) in data.cells.iter().enumerate() {
        row_of[c] = r;
    }
    let to_rows = |v: &[usize]| -> Vec<usize> {
        v.iter()
            .map(|&c| row_of[c])
            .filter(|&r| r != usize::MAX)
            .collect()
    };
    let rows = DataSplit {
        train: to_rows(&split.train),
        val: to_rows(&split.val),
        test: to_rows(&split.test),
    };
    let codes: Vec<u32> = data.cells.iter().map(|&c| labels.codes[c]).collect();
    // the cache's size against the memory there is
    let n_layers = bert.encoder.layer.len();
    let limit = match a.cache_limit_gb {
        Some(g) => (g * 1024f64.powi(3)) as u64,
        None => available_memory().map_or(u64::MAX, |m| m / 2),
    };
    let kind = cache_kind(&trainable, n_layers);
    let need = cache_bytes(
        kind,
        rows.train.len() + rows.val.len(),
        data.seq_len,
        bert.hidden_size(),
    );
    if cfg.cache && need > limit && verbose {
        eprintln!(
            "note: the frozen-prefix cache would take {:.1} GiB (limit {:.1} GiB): every epoch recomputes the frozen blocks instead",
            need as f64 / 1024f64.powi(3),
            limit as f64 / 1024f64.powi(3)
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    B::seed(&device, a.seed);
    let head = CellTypeHeadConfig::new(bert.hidden_size(), classes.len())
        .with_hidden(a.head_hidden)
        .with_dropout(a.dropout)
        .with_batch_norm(!a.no_batch_norm)
        .init::<B>(&device);
    let model = CellTypeClassifier { bert, head };
    let job = FinetuneJob {
        out: &a.out,
        data: &data,
        present: &present,
        codes: &codes,
        classes: &classes,
        split: &rows,
        config: &cfg,
        resume: a.resume,
        cache_limit: limit,
    };
    let pb = if verbose {
        let pb = ProgressBar::new(rows.train.len() as u64);
        if let Ok(st) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} cells ({per_sec}, eta {eta})",
        ) {
            pb.set_style(st.progress_chars("=> "));
        }
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut last_f1 = f64::NAN;
    let mut on_event = |e: Event| match e {
        Event::Caching { done, total } => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            pb.set_message("caching the frozen blocks");
        }
        Event::Update {
            epoch,
            done,
            total,
            loss,
        } => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            pb.set_message(format!(
                "epoch {epoch}/{} loss {loss:.4} val F1 {last_f1:.4}",
                cfg.epochs
            ));
        }
        Event::Epoch(r) => {
            last_f1 = r.val_macro_f1;
            pb.println(format!(
                "epoch {:>3}: train loss {:.4}, val macro-F1 {:.4}, val accuracy {:.4} ({:.1} s)",
                r.epoch, r.train_loss, r.val_macro_f1, r.val_accuracy, r.seconds
            ));
        }
        Event::Resumed { epoch } => pb.println(format!("resumed after epoch {epoch}")),
    };
    let outcome = finetune::<B>(&job, model, &device, &mut on_event)?;
    pb.finish_and_clear();
    // the test cells, once, with the selected model
    let best = outcome.best;
    let inner = device.clone();
    let mut test_pred: Vec<u32> = Vec::with_capacity(rows.test.len());
    for chunk in rows.test.chunks(a.batch_size) {
        let x = data.tensor::<B::InnerBackend>(chunk, &inner);
        let l = best.forward(x, &present, a.pooling)?;
        let v: Vec<f32> = l
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| anyhow::anyhow!("copying logits: {e:?}"))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            let c = data.cells[chunk[i / classes.len()]];
            bail!(
                "{}: the classifier gave a non-finite logit for cell {c} ('{}')",
                file.display(),
                cell_names[c]
            );
        }
        test_pred.extend(argmax_rows(&v, classes.len()));
    }
    let truth: Vec<&str> = rows
        .test
        .iter()
        .map(|&r| classes[codes[r] as usize].as_str())
        .collect();
    let pred: Vec<&str> = test_pred
        .iter()
        .map(|&c| classes[c as usize].as_str())
        .collect();
    let test = classification_report(&truth, &pred)?;
    let mut predictions = serde_json::Map::new();
    for (&r, p) in rows.test.iter().zip(&pred) {
        predictions.insert(cell_names[data.cells[r]].clone(), json!(p));
    }
    // the classifier folder, the picture
    let training_genes: Vec<u32> = present[..present.len() - 2]
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == 1)
        .map(|(i, _)| i as u32)
        .collect();
    let info = ClassifierInfo {
        format: aido_tasks::classifier::FORMAT.to_string(),
        classes: classes.clone(),
        pooling: a.pooling.name().to_string(),
        head_hidden: a.head_hidden,
        dropout: a.dropout,
        batch_norm: !a.no_batch_norm,
        training_genes,
        trained_on: json!({
            "input": file.display().to_string(),
            "label_column": a.label_column,
            "model": a.model.display().to_string(),
            "trainable": a.trainable,
            "best_epoch": outcome.best_epoch,
        }),
    };
    save_classifier(&a.out.join("classifier"), &best, &mcfg, &vocab, &info)?;
    confusion_png(
        &a.out.join("confusion.png"),
        &test.confusion,
        &format!(
            "{} — test cells ({}), macro-F1 {:.3}",
            a.label_column,
            rows.test.len(),
            test.macro_f1
        ),
    )?;
    let baselines = if a.baselines {
        Some(run_baselines(
            a, &rows, &data, &codes, &classes, n_cells, verbose,
        )?)
    } else {
        None
    };
    let report = json!({
        "n_train": rows.train.len(),
        "n_val": rows.val.len(),
        "n_test": rows.test.len(),
        "classes": classes,
        "class_weights": classes.iter().cloned().zip(outcome.class_weights.iter().copied()).collect::<BTreeMap<_, _>>(),
        "class_weights_rule": a.class_weights.to_string(),
        "best_epoch": outcome.best_epoch,
        "stopped_early": outcome.stopped_early,
        "epochs": outcome.history,
        "test": report_json(&test),
        "test_predictions": predictions,
        "baselines": baselines.unwrap_or(Value::Null),
        "cache": {
            "kind": format!("{:?}", outcome.cache),
            "bytes": outcome.cache_bytes,
            "seconds": outcome.cache_seconds,
        },
        "seconds": t0.elapsed().as_secs_f64(),
        "settings": {
            "model": a.model.display().to_string(),
            "input": file.display().to_string(),
            "label_column": a.label_column,
            "split": match &a.split_column { Some(c) => json!({"column": c}), None => json!({"val_fraction": a.val_fraction, "test_fraction": a.test_fraction, "seed": a.seed}) },
            "config": cfg,
            "device": format!("{:?}", a.device),
            "precision": a.precision.as_str(),
        },
    });
    write_json(&a.out.join("report.json"), &report)?;
    if verbose {
        outln!(
            "test ({} cells): macro-F1 {:.4}, accuracy {:.4} (best epoch {}); wrote {}/report.json, confusion.png, classifier/",
            rows.test.len(),
            test.macro_f1,
            test.accuracy,
            outcome.best_epoch,
            a.out.display()
        );
        if let Some(b) = report.get("baselines").filter(|b| !b.is_null()) {
            for name in ["logreg_pca", "knn_pca"] {
                outln!(
                    "baseline {name}: macro-F1 {:.4}, accuracy {:.4}",
                    b[name]["macro_f1"].as_f64().unwrap_or(f64::NAN),
                    b[name]["accuracy"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
    }
    Ok(())
}

fn report_json(r: &ClassificationReport) -> Value {
    json!({
        "accuracy": r.accuracy,
        "macro_f1": r.macro_f1,
        "per_class_f1": r.per_class_f1,
        "confusion": r.confusion,
    })
}

/// The expression baselines on the same training and test cells.
fn run_baselines(
    a: &FinetuneArgs,
    rows: &DataSplit,
    data: &TokenizedCells,
    codes: &[u32],
    classes: &[String],
    n_cells: usize,
    verbose: bool,
) -> Result<Value> {
    let t0 = Instant::now();
    let mut source = open_source(&a.input.input, &a.input.read_options())?;
    let n_genes = source.gene_names().len();
    let counts = read_all(source.as_mut())?;
    if counts.n_cells() != n_cells {
        bail!(
            "{}: read {} cells, expected {n_cells}",
            a.input.input.display(),
            counts.n_cells()
        );
    }
    // rows of the tokenized store → cells of the file
    let cells_of = |v: &[usize]| -> Vec<usize> { v.iter().map(|&r| data.cells[r]).collect() };
    let (train_c, test_c) = (cells_of(&rows.train), cells_of(&rows.test));
    let (x, k) = pca_features(counts, n_genes, &train_c, 50)?;
    let take = |cells: &[usize]| -> Vec<f32> {
        cells
            .iter()
            .flat_map(|&c| x[c * k..(c + 1) * k].iter().copied())
            .collect()
    };
    let (xtr, xte) = (take(&train_c), take(&test_c));
    let ytr: Vec<u32> = rows.train.iter().map(|&r| codes[r]).collect();
    let truth: Vec<&str> = rows
        .test
        .iter()
        .map(|&r| classes[codes[r] as usize].as_str())
        .collect();
    let score = |pred: &[u32]| -> Result<Value> {
        let p: Vec<&str> = pred.iter().map(|&c| classes[c as usize].as_str()).collect();
        let r = classification_report(&truth, &p)?;
        Ok(json!({"accuracy": r.accuracy, "macro_f1": r.macro_f1, "per_class_f1": r.per_class_f1}))
    };
    let lr = fit_logreg(&xtr, &ytr, k, classes.len(), 1.0)?;
    let logreg = score(&lr.predict(&xte))?;
    let knn = score(&knn_vote(&xtr, &ytr, &xte, k, 10, classes.len())?)?;
    if verbose {
        eprintln!(
            "baselines on {k} PCs of the expression ({:.1} s; logistic regression: {} L-BFGS iterations)",
            t0.elapsed().as_secs_f64(),
            lr.iterations
        );
    }
    Ok(json!({
        "features": format!("PCA ({k} components) of log-normalized expression; HVG, scaling and PCA fitted on the training cells"),
        "logreg_pca": logreg,
        "knn_pca": knn,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

/// Runs `aido predict`.
pub(crate) fn cmd_predict(a: &PredictArgs, verbose: bool) -> Result<usize> {
    a.device.ensure_compiled()?;
    match a.device {
        DeviceKind::Cpu => predict_on::<aido_model::Cpu>(Default::default(), a, verbose),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => predict_on::<aido_model::backend::Cuda>(Default::default(), a, verbose),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => predict_on::<aido_model::backend::Wgpu>(Default::default(), a, verbose),
        #[allow(unreachable_patterns)]
        other => bail!("device {other:?} is not compiled in"),
    }
}

fn predict_on<B: AttentionBackend + Backend>(
    device: B::Device,
    a: &PredictArgs,
    verbose: bool,
) -> Result<usize> {
    let t0 = Instant::now();
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some("h5ad")
    {
        bail!("--output {}: use a .h5ad file name", a.output.display());
    }
    let mut clf = load_classifier::<B>(&a.model, &device)?;
    clf.model.bert.set_precision(a.precision)?;
    let file = &a.input.input;
    let mut source = open_source(file, &a.input.read_options())?;
    let n_cells = source.n_cells();
    let mut tok = Tokenizer::new(
        source.as_mut(),
        &clf.vocab,
        a.input.options_for(&clf.vocab)?,
    )?;
    let present = tok.alignment().present().to_vec();
    clf.check_genes(&present, file)?;
    let c = clf.info.classes.len();
    let pb = if verbose {
        super::progress(n_cells as u64, "predict")
    } else {
        ProgressBar::hidden()
    };
    let mut proba: Vec<f32> = Vec::with_capacity(n_cells * c);
    let mut kept: Vec<usize> = Vec::with_capacity(n_cells);
    while let Some(b) = tok.next_batch(a.batch_size)? {
        let n = b.cells.len();
        if n == 0 {
            continue;
        }
        let v: Vec<f32> = b.values.iter().copied().collect();
        let p = clf.predict_proba(&v, n, &present, &device)?;
        if let Some(i) = p.iter().position(|x| !x.is_finite()) {
            let cell = b.cells[i / c];
            bail!(
                "{}: the classifier gave a non-finite probability for cell {cell} ('{}'); nothing was written",
                file.display(),
                tok.source().obs().cell_name(cell)
            );
        }
        proba.extend_from_slice(&p);
        kept.extend(&b.cells);
        pb.set_position(tok.stats().cells_read as u64);
    }
    pb.finish_and_clear();
    let n = kept.len();
    let pred = argmax_rows(&proba, c);
    let conf: Vec<f64> = proba
        .chunks_exact(c)
        .zip(&pred)
        .map(|(r, &k)| f64::from(r[k as usize]))
        .collect();
    let obs_cols = vec![
        (
            "aido_cell_type".to_string(),
            ObsColumn::Categorical {
                codes: pred.iter().map(|&k| k as i32).collect(),
                categories: clf.info.classes.clone(),
                ordered: false,
            },
        ),
        (
            "aido_cell_type_confidence".to_string(),
            ObsColumn::Float(conf),
        ),
    ];
    let proba_m = Array2::from_shape_vec((n, c), proba).context("internal: probability shape")?;
    let uns = vec![
        (
            "aido_cell_type_classes".to_string(),
            UnsValue::StrArray(clf.info.classes.clone()),
        ),
        (
            "aido_cell_type_model".to_string(),
            UnsValue::Str(a.model.display().to_string()),
        ),
    ];
    let whole = InputFormat::detect(file)? == InputFormat::H5ad;
    if whole {
        if n != n_cells {
            bail!(
                "{}: {} cells had no counts in the model's genes and were skipped; the output must cover every cell of the file (drop them first)",
                file.display(),
                n_cells - n
            );
        }
        let add = H5adAdditions {
            obs: obs_cols,
            obsm: vec![("aido_cell_type_proba".to_string(), proba_m)],
            uns,
            ..Default::default()
        };
        write_input_plus(file, &a.output, &add)?;
    } else {
        let mut obs = tok.source().obs().select(&kept);
        obs.columns.extend(obs_cols);
        let mut w = H5adWriter::new(obs, Vec::new());
        w.obsm = vec![("aido_cell_type_proba".to_string(), proba_m)];
        w.uns = uns
            .into_iter()
            .filter_map(|(k, v)| match v {
                UnsValue::Str(s) => Some((k, s)),
                UnsValue::StrArray(s) => Some((k, s.join(","))),
                _ => None,
            })
            .collect();
        w.write(&a.output)?;
    }
    if verbose {
        let mut counts = vec![0usize; c];
        for &k in &pred {
            counts[k as usize] += 1;
        }
        let top: Vec<String> = clf
            .info
            .classes
            .iter()
            .zip(&counts)
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        outln!(
            "wrote {}: obs/aido_cell_type for {n} cells ({}) in {:.1} s",
            a.output.display(),
            top.join(", "),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(n)
}
