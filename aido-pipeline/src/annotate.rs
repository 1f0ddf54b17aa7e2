//! Cell-type annotation: fine-tune the encoder with the paper's head on labelled cells
//! ([`finetune_cells`]), and label new cells with the classifier ([`predict_matrix`],
//! [`predict_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aido_eval::metrics::classify::{ClassificationReport, classification_report};
use aido_eval::plot::confusion_png;
use aido_model::{Pooling, Precision};
use aido_tasks::baselines::{fit_logreg, knn_vote, pca_features};
use aido_tasks::finetune::{argmax_rows, cache_bytes, cache_kind};
use aido_tasks::{
    CellTypeClassifier, CellTypeHeadConfig, ClassWeights, ClassifierInfo, DataSplit,
    FinetuneConfig, FinetuneJob, TokenizedCells, finetune, load_classifier, save_classifier,
    split_from_values, stratified_split,
};
use aido_tokenize::h5ad_edit::{H5adAdditions, UnsValue};
use aido_tokenize::{
    CellSource, ObsColumn, ReadOptions, TokenizeOptions, Tokenizer, open_source, read_all,
};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use ndarray::Array2;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Event;
use crate::error::{PipelineError, Result};
use crate::matrix::CountsMatrix;
use crate::obs::{obs_labels, obs_strings, write_json};
use crate::pretrained::Pretrained;

/// How to predict.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Cells per forward pass (default 16).
    pub batch_size: usize,
    /// Compute precision (default f32).
    pub precision: Precision,
    /// Reading and validating the counts.
    pub tokenize: TokenizeOptions,
    /// Predict at most this many cells (the first ones): a trial run on a large file. A file
    /// written back whole then gets the small file instead.
    pub max_cells: Option<usize>,
    /// The prefix of the results in an h5ad output (`None`: `aido_cell_type`), as scanpy's
    /// `key_added`: obs `<key>` and `<key>_confidence`, obsm `<key>_proba`, uns
    /// `<key>_classes` and `<key>_model`.
    pub key_added: Option<String>,
}

/// The prefix of the predictions when none is given.
pub const DEFAULT_PREDICT_KEY: &str = "aido_cell_type";

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            batch_size: 16,
            precision: Precision::F32,
            tokenize: TokenizeOptions::default(),
            max_cells: None,
            key_added: None,
        }
    }
}

/// Predicted cell types.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// The classifier's classes (column order of `proba`).
    pub classes: Vec<String>,
    /// Class probabilities `[n, C]`.
    pub proba: Array2<f32>,
    /// The most probable class of each cell (index into `classes`).
    pub predicted: Vec<u32>,
    /// Its probability.
    pub confidence: Vec<f64>,
    /// Input index of each row (all cells unless empty cells were skipped).
    pub kept: Vec<usize>,
    /// What was done.
    pub report: PredictReport,
}

/// What a prediction run did.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    /// The classifier folder.
    pub model: String,
    /// The input.
    pub input: String,
    /// Cells in the input.
    pub cells_in: usize,
    /// Cells labelled.
    pub cells_predicted: usize,
    /// Cells per predicted class (classes with none left out).
    pub class_counts: BTreeMap<String, usize>,
    /// The obs column (and prefix) of the predictions.
    pub key: String,
    /// Seconds taken.
    pub seconds: f64,
}

impl std::fmt::Display for PredictReport {
    /// `obs/aido_cell_type for N cells (T cell 40, B cell 12) in 1.2 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let top: Vec<String> = self
            .class_counts
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        write!(
            f,
            "obs/{} for {} cells ({}) in {:.1} s",
            self.key,
            self.cells_predicted,
            top.join(", "),
            self.seconds
        )
    }
}

/// Labels every cell of any [`CellSource`] with a classifier folder.
pub fn predict_source<B: Backend>(
    classifier: &Path,
    source: &mut dyn CellSource,
    options: &PredictOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<Predictions> {
    let t0 = Instant::now();
    if options.batch_size == 0 {
        return Err(PipelineError::option("batch_size", "must be at least 1"));
    }
    if options.max_cells == Some(0) {
        return Err(PipelineError::option("max_cells", "must be at least 1"));
    }
    let mut clf = load_classifier::<B>(classifier, device)?;
    clf.model.bert.set_precision(options.precision)?;
    let input = source.path().to_path_buf();
    let n_cells = source.n_cells();
    let mut tokenize = options.tokenize;
    tokenize.align = tokenize.align.for_vocab(&clf.vocab);
    let mut tok = Tokenizer::new(source, &clf.vocab, tokenize)?;
    on_event(Event::Aligned(tok.report().clone()));
    let present = tok.alignment().present().to_vec();
    clf.check_genes(&present, &input)?;
    let c = clf.info.classes.len();
    let total = options.max_cells.map_or(n_cells, |m| m.min(n_cells));
    let mut proba: Vec<f32> = Vec::with_capacity(total * c);
    let mut kept: Vec<usize> = Vec::with_capacity(total);
    while tok.stats().cells_read < total {
        let want = options.batch_size.min(total - tok.stats().cells_read);
        let Some(b) = tok.next_batch(want)? else {
            break;
        };
        on_event(Event::Progress {
            stage: "predict",
            done: tok.stats().cells_read,
            total,
        });
        let n = b.cells.len();
        if n == 0 {
            continue;
        }
        let v: Vec<f32> = b.values.iter().copied().collect();
        let p = clf.predict_proba(&v, n, &present, device)?;
        if let Some(i) = p.iter().position(|x| !x.is_finite()) {
            let cell = b.cells[i / c];
            return Err(PipelineError::NonFinite {
                input: input.display().to_string(),
                cell,
                name: tok.source().obs().cell_name(cell),
                what: "probability".into(),
            });
        }
        proba.extend_from_slice(&p);
        kept.extend(&b.cells);
    }
    if let Some(w) = tok.stats().non_integer_warning() {
        on_event(Event::Note(w));
    }
    let n = kept.len();
    let predicted = argmax_rows(&proba, c);
    let confidence: Vec<f64> = proba
        .chunks_exact(c)
        .zip(&predicted)
        .map(|(r, &k)| f64::from(r[k as usize]))
        .collect();
    let mut counts = vec![0usize; c];
    for &k in &predicted {
        counts[k as usize] += 1;
    }
    let class_counts = clf
        .info
        .classes
        .iter()
        .zip(&counts)
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| (name.clone(), *n))
        .collect();
    Ok(Predictions {
        classes: clf.info.classes.clone(),
        proba: Array2::from_shape_vec((n, c), proba)
            .map_err(|_| PipelineError::option("internal", "probability shape"))?,
        predicted,
        confidence,
        kept,
        report: PredictReport {
            model: classifier.display().to_string(),
            input: input.display().to_string(),
            cells_in: n_cells,
            cells_predicted: n,
            class_counts,
            key: options
                .key_added
                .clone()
                .unwrap_or_else(|| DEFAULT_PREDICT_KEY.to_string()),
            seconds: t0.elapsed().as_secs_f64(),
        },
    })
}

/// Labels the cells of a matrix in memory with a classifier folder written by fine-tuning.
pub fn predict_matrix<B: Backend>(
    classifier: &Path,
    matrix: &CountsMatrix<'_>,
    options: &PredictOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<Predictions> {
    predict_source::<B>(classifier, &mut matrix.source(), options, device, on_event)
}

/// The results of [`predict_matrix`] under the names `aido predict` writes, for the prefix
/// `key` (by default [`DEFAULT_PREDICT_KEY`]): `obs` `<key>` (categorical) and
/// `<key>_confidence`, `obsm/<key>_proba`, `uns/<key>_classes` and `uns/<key>_model`.
pub fn prediction_additions(p: &Predictions, key: &str) -> H5adAdditions {
    H5adAdditions {
        obs: vec![
            (
                key.to_string(),
                ObsColumn::Categorical {
                    codes: p.predicted.iter().map(|&k| k as i32).collect(),
                    categories: p.classes.clone(),
                    ordered: false,
                },
            ),
            (
                format!("{key}_confidence"),
                ObsColumn::Float(p.confidence.clone()),
            ),
        ],
        obsm: vec![(format!("{key}_proba"), p.proba.clone())],
        uns: vec![
            (
                format!("{key}_classes"),
                UnsValue::StrArray(p.classes.clone()),
            ),
            (
                format!("{key}_model"),
                UnsValue::Str(p.report.model.clone()),
            ),
        ],
        ..Default::default()
    }
}

/// Labels the cells of a file and writes `output` (`.h5ad`): an h5ad input copied whole plus
/// the [`prediction_additions`], other inputs as a small file of their `obs` plus the same
/// entries. What `aido predict` runs.
#[allow(clippy::too_many_arguments)]
pub fn predict_file<B: Backend>(
    classifier: &Path,
    input: &Path,
    read: &ReadOptions,
    output: &Path,
    options: &PredictOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<PredictReport> {
    if output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some("h5ad")
    {
        return Err(PipelineError::option(
            "output",
            format!("{}: use a .h5ad file name", output.display()),
        ));
    }
    crate::output::check_writable(output, "output")?;
    let key = options.key_added.as_deref().unwrap_or(DEFAULT_PREDICT_KEY);
    crate::output::check_key_name(key, "key_added")?;
    let mut source = open_source(input, read)?;
    let n_cells = source.n_cells();
    let limited = options.max_cells.is_some_and(|m| m < n_cells);
    let whole = crate::output::whole_input(input, limited)?;
    if limited && crate::output::whole_input(input, false)? {
        on_event(Event::Note(format!(
            "`max_cells`: the first {} of {n_cells} cells are predicted, so {} gets those cells' obs and predictions only (not the whole input)",
            options.max_cells.unwrap_or(n_cells),
            output.display()
        )));
    }
    let p = predict_source::<B>(classifier, source.as_mut(), options, device, on_event)?;
    let obs = || Ok(source.obs().select(&p.kept));
    crate::output::write_results(
        input,
        output,
        whole,
        n_cells,
        &p.kept,
        prediction_additions(&p, key),
        obs,
        on_event,
    )?;
    on_event(Event::Wrote {
        path: output.to_path_buf(),
        what: format!("obs/{key}"),
    });
    Ok(p.report)
}

/// Which cells train, select and test.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitChoice {
    /// Stratified by class, seeded: these fractions of every class held out.
    Fractions {
        /// Validation fraction (model selection; default 0.1).
        val: f64,
        /// Test fraction (default 0.2).
        test: f64,
    },
    /// The user's split: an obs column holding `train`, `val` (`valid`, `validation`) or
    /// `test` for every cell.
    Column(String),
}

/// How to fine-tune (defaults = `aido finetune`'s, the paper's recipe).
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// What of the backbone trains: `frozen`, `last:K` (default `last:1`), `full`,
    /// `lora:R[:ALPHA]`.
    pub trainable: String,
    /// Pooling of the encoder output (default max, the paper's head).
    pub pooling: Pooling,
    /// Width of the head's hidden layer (default 256).
    pub head_hidden: usize,
    /// Dropout after the head's ReLU (default 0).
    pub dropout: f64,
    /// The head's non-affine batch norm (default on).
    pub batch_norm: bool,
    /// Class weights of the loss (default `capped:50`).
    pub class_weights: ClassWeights,
    /// The split (default: fractions 0.1 / 0.2).
    pub split: SplitChoice,
    /// Seed of the split, the head's initialization, the epoch order and dropout (default 0).
    pub seed: u64,
    /// Maximum epochs (default 20).
    pub epochs: usize,
    /// Cells per update (default 16).
    pub batch_size: usize,
    /// Learning rate (AdamW, constant; default 1e-3).
    pub lr: f64,
    /// Epochs without a better validation macro-F1 before stopping (0: never; default 5).
    pub patience: usize,
    /// Also run the expression baselines (logistic regression and 10-NN on 50 PCs).
    pub baselines: bool,
    /// Compute precision (default f32).
    pub precision: Precision,
    /// Continue the run in the output folder from its last epoch checkpoint.
    pub resume: bool,
    /// Cache the frozen part of the backbone (default on).
    pub cache: bool,
    /// Largest frozen-prefix cache in bytes (`None`: half of the available memory).
    pub cache_limit: Option<u64>,
    /// Reading and validating the counts.
    pub tokenize: TokenizeOptions,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            trainable: "last:1".into(),
            pooling: Pooling::Max,
            head_hidden: 256,
            dropout: 0.0,
            batch_norm: true,
            class_weights: ClassWeights::Capped(50.0),
            split: SplitChoice::Fractions {
                val: 0.1,
                test: 0.2,
            },
            seed: 0,
            epochs: 20,
            batch_size: 16,
            lr: 1e-3,
            patience: 5,
            baselines: false,
            precision: Precision::F32,
            resume: false,
            cache: true,
            cache_limit: None,
            tokenize: TokenizeOptions::default(),
        }
    }
}

/// The test-set scores of the selected model.
#[derive(Debug, Clone, Serialize)]
pub struct TestScores {
    /// Accuracy.
    pub accuracy: f64,
    /// Macro F1 over the union of true and predicted classes.
    pub macro_f1: f64,
    /// F1 per class.
    pub per_class_f1: BTreeMap<String, f64>,
    /// Confusion matrix.
    pub confusion: aido_eval::metrics::classify::Confusion,
}

impl From<&ClassificationReport> for TestScores {
    fn from(r: &ClassificationReport) -> Self {
        TestScores {
            accuracy: r.accuracy,
            macro_f1: r.macro_f1,
            per_class_f1: r.per_class_f1.clone(),
            confusion: r.confusion.clone(),
        }
    }
}

/// The frozen-prefix cache used.
#[derive(Debug, Clone, Serialize)]
pub struct CacheUse {
    /// Its kind.
    pub kind: String,
    /// Its size.
    pub bytes: u64,
    /// Seconds to build it.
    pub seconds: f64,
}

/// What fine-tuning did: `report.json` of `aido finetune`.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    /// Training cells.
    pub n_train: usize,
    /// Validation cells.
    pub n_val: usize,
    /// Test cells.
    pub n_test: usize,
    /// The classes, sorted.
    pub classes: Vec<String>,
    /// The loss's weight of each class.
    pub class_weights: BTreeMap<String, f64>,
    /// The rule the weights came from.
    pub class_weights_rule: String,
    /// The selected epoch.
    pub best_epoch: usize,
    /// Whether patience ran out.
    pub stopped_early: bool,
    /// Per-epoch loss and validation scores.
    pub epochs: Vec<aido_tasks::finetune::EpochRecord>,
    /// Test scores of the selected model.
    pub test: TestScores,
    /// Cell name → predicted class, test cells.
    pub test_predictions: BTreeMap<String, String>,
    /// The expression baselines on the same split (when asked for).
    pub baselines: Option<Value>,
    /// The frozen-prefix cache.
    pub cache: CacheUse,
    /// Seconds taken.
    pub seconds: f64,
    /// The settings of the run.
    pub settings: Value,
}

fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The line a terminal shows for a fine-tuning event (an epoch's scores, a resume); `None` for
/// the updates and caching a progress bar shows instead.
pub fn event_line(e: &aido_tasks::finetune::Event) -> Option<String> {
    use aido_tasks::finetune::Event as E;
    match e {
        E::Epoch(r) => Some(format!(
            "epoch {:>3}: train loss {:.4}, val macro-F1 {:.4}, val accuracy {:.4} ({:.1} s)",
            r.epoch, r.train_loss, r.val_macro_f1, r.val_accuracy, r.seconds
        )),
        E::Resumed { epoch } => Some(format!("resumed after epoch {epoch}")),
        E::Caching { .. } | E::Update { .. } => None,
    }
}

/// Fine-tunes `pretrained` to classify `obs/<label_column>` of the cells `open` reads (called
/// once to fine-tune and once more for the baselines), and writes into `out`:
/// `report.json` (the returned [`FinetuneReport`]), `confusion.png`, `classifier/` (for
/// [`predict_file`] / [`predict_matrix`]) and `checkpoints/`. `B` is an autodiff backend.
/// Training progress arrives as [`Event::Finetune`].
#[allow(clippy::too_many_arguments)]
pub fn finetune_cells<'s, B>(
    pretrained: &Pretrained,
    open: &mut dyn FnMut() -> Result<Box<dyn CellSource + 's>>,
    label_column: &str,
    out: &Path,
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<FinetuneReport>
where
    B: AutodiffBackend,
{
    let t0 = Instant::now();
    crate::output::check_out_folder(out, "out")?;
    let cfg = FinetuneConfig {
        trainable: options.trainable.clone(),
        pooling: options.pooling.name().to_string(),
        head_hidden: options.head_hidden,
        dropout: options.dropout,
        batch_norm: options.batch_norm,
        class_weights: options.class_weights,
        epochs: options.epochs,
        batch_size: options.batch_size,
        lr: options.lr,
        patience: options.patience,
        seed: options.seed,
        cache: options.cache,
    };
    cfg.validate()?;
    let trainable = cfg.trainable()?;
    let out_has_files = out.is_dir()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
    if out.exists() && !out.is_dir() {
        return Err(PipelineError::option(
            "out",
            format!("{}: exists and is not a folder", out.display()),
        ));
    }
    if options.resume && !out_has_files {
        return Err(PipelineError::option(
            "resume",
            format!(
                "{} holds no run to resume (start without `resume`)",
                out.display()
            ),
        ));
    }
    if out_has_files && !options.resume {
        return Err(PipelineError::option(
            "out",
            format!(
                "{}: the folder exists and is not empty; continue its run with `resume`, or choose a new folder",
                out.display()
            ),
        ));
    }
    // the model, the labels, the split: all checked before anything is written
    let vocab = &pretrained.vocab;
    let pre = pretrained.load::<B>(aido_model::LoadMode::EncoderOnly, options.precision, device)?;
    let mcfg = pretrained.config.clone();
    let bert = aido_train::finetune::prepare(pre.bert, &trainable, device)?;
    let mut source = open()?;
    let input = source.path().display().to_string();
    let n_cells = source.n_cells();
    let labels = obs_labels(source.obs(), &input, label_column)?;
    if labels.n_distinct() < 2 {
        return Err(PipelineError::input(
            &input,
            format!(
                "obs/{label_column} has a single class ('{}'): a classifier needs at least two",
                labels.names.first().map_or("", String::as_str)
            ),
        ));
    }
    let classes = labels.names.clone();
    let split = match &options.split {
        SplitChoice::Column(col) => {
            let obs = source.obs();
            let c = obs.column(col).ok_or_else(|| {
                PipelineError::input(&input, format!("obs has no split column '{col}'"))
            })?;
            split_from_values(
                &obs_strings(c),
                col,
                &|i| obs.cell_name(i),
                &labels.codes,
                &classes,
            )
            .map_err(|e| PipelineError::input(&input, e.to_string()))?
        }
        SplitChoice::Fractions { val, test } => {
            stratified_split(&labels.codes, &classes, *val, *test, options.seed)
                .map_err(|e| PipelineError::input(&input, format!("obs/{label_column}: {e}")))?
        }
    };
    let cell_names: Vec<String> = (0..n_cells).map(|i| source.obs().cell_name(i)).collect();
    // tokenize every cell once
    let mut tokenize = options.tokenize;
    tokenize.align = tokenize.align.for_vocab(vocab);
    let mut tok = Tokenizer::new(source.as_mut(), vocab, tokenize)?;
    on_event(Event::Aligned(tok.report().clone()));
    let present = tok.alignment().present().to_vec();
    let mut data = TokenizedCells::new(present.len());
    while let Some(b) = tok.next_batch(256)? {
        data.push_batch(&b);
        on_event(Event::Progress {
            stage: "tokenize",
            done: tok.stats().cells_read,
            total: n_cells,
        });
    }
    drop(tok);
    drop(source);
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
    let limit = options
        .cache_limit
        .unwrap_or_else(|| available_memory().map_or(u64::MAX, |m| m / 2));
    let kind = cache_kind(&trainable, n_layers);
    let need = cache_bytes(
        kind,
        rows.train.len() + rows.val.len(),
        data.seq_len,
        bert.hidden_size(),
    );
    if cfg.cache && need > limit {
        on_event(Event::Note(format!(
            "note: the frozen-prefix cache would take {:.1} GiB (limit {:.1} GiB): every epoch recomputes the frozen blocks instead",
            need as f64 / 1024f64.powi(3),
            limit as f64 / 1024f64.powi(3)
        )));
    }
    std::fs::create_dir_all(out).map_err(PipelineError::io(out))?;
    B::seed(device, options.seed);
    let head = CellTypeHeadConfig::new(bert.hidden_size(), classes.len())
        .with_hidden(options.head_hidden)
        .with_dropout(options.dropout)
        .with_batch_norm(options.batch_norm)
        .init::<B>(device);
    let model = CellTypeClassifier { bert, head };
    let job = FinetuneJob {
        out,
        data: &data,
        present: &present,
        codes: &codes,
        classes: &classes,
        split: &rows,
        config: &cfg,
        resume: options.resume,
        cache_limit: limit,
    };
    let outcome = finetune::<B>(&job, model, device, &mut |e| on_event(Event::Finetune(e)))?;
    // the test cells, once, with the selected model
    let best = outcome.best;
    let mut test_pred: Vec<u32> = Vec::with_capacity(rows.test.len());
    for chunk in rows.test.chunks(options.batch_size) {
        let x = data.tensor::<B::InnerBackend>(chunk, device);
        let l = best.forward(x, &present, options.pooling)?;
        let v: Vec<f32> = l
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| PipelineError::option("internal", format!("copying logits: {e:?}")))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            let c = data.cells[chunk[i / classes.len()]];
            return Err(PipelineError::NonFinite {
                input,
                cell: c,
                name: cell_names[c].clone(),
                what: "logit".into(),
            });
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
    let test_predictions = rows
        .test
        .iter()
        .zip(&pred)
        .map(|(&r, p)| (cell_names[data.cells[r]].clone(), p.to_string()))
        .collect();
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
        pooling: options.pooling.name().to_string(),
        head_hidden: options.head_hidden,
        dropout: options.dropout,
        batch_norm: options.batch_norm,
        training_genes,
        trained_on: json!({
            "input": input,
            "label_column": label_column,
            "model": pretrained.name(),
            "trainable": options.trainable,
            "best_epoch": outcome.best_epoch,
        }),
    };
    save_classifier(&out.join("classifier"), &best, &mcfg, vocab, &info)?;
    confusion_png(
        &out.join("confusion.png"),
        &test.confusion,
        &format!(
            "{label_column} — test cells ({}), macro-F1 {:.3}",
            rows.test.len(),
            test.macro_f1
        ),
    )?;
    let baselines = if options.baselines {
        let mut source = open()?;
        Some(run_baselines(
            source.as_mut(),
            &rows,
            &data,
            &codes,
            &classes,
            n_cells,
            on_event,
        )?)
    } else {
        None
    };
    let report = FinetuneReport {
        n_train: rows.train.len(),
        n_val: rows.val.len(),
        n_test: rows.test.len(),
        classes: classes.clone(),
        class_weights: classes
            .iter()
            .cloned()
            .zip(outcome.class_weights.iter().copied())
            .collect(),
        class_weights_rule: options.class_weights.to_string(),
        best_epoch: outcome.best_epoch,
        stopped_early: outcome.stopped_early,
        epochs: outcome.history,
        test: TestScores::from(&test),
        test_predictions,
        baselines,
        cache: CacheUse {
            kind: format!("{:?}", outcome.cache),
            bytes: outcome.cache_bytes,
            seconds: outcome.cache_seconds,
        },
        seconds: t0.elapsed().as_secs_f64(),
        settings: json!({
            "model": pretrained.name(),
            "input": input,
            "label_column": label_column,
            "split": match &options.split {
                SplitChoice::Column(c) => json!({"column": c}),
                SplitChoice::Fractions { val, test } => json!({"val_fraction": val, "test_fraction": test, "seed": options.seed}),
            },
            "config": cfg,
            "precision": options.precision.as_str(),
        }),
    };
    write_json(&out.join("report.json"), &report)?;
    on_event(Event::Wrote {
        path: out.to_path_buf(),
        what: "report.json, confusion.png, classifier/".into(),
    });
    Ok(report)
}

/// [`finetune_cells`] on a file (any supported format).
#[allow(clippy::too_many_arguments)]
pub fn finetune_file<B: AutodiffBackend>(
    pretrained: &Pretrained,
    input: &Path,
    read: &ReadOptions,
    label_column: &str,
    out: &Path,
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<FinetuneReport> {
    let mut open = || -> Result<Box<dyn CellSource>> { Ok(open_source(input, read)?) };
    finetune_cells::<B>(
        pretrained,
        &mut open,
        label_column,
        out,
        options,
        device,
        on_event,
    )
}

/// [`finetune_cells`] on a matrix in memory (labels in its `obs`).
pub fn finetune_matrix<B: AutodiffBackend>(
    pretrained: &Pretrained,
    matrix: &CountsMatrix<'_>,
    label_column: &str,
    out: &Path,
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<FinetuneReport> {
    let mut open = || -> Result<Box<dyn CellSource + '_>> { Ok(Box::new(matrix.source())) };
    finetune_cells::<B>(
        pretrained,
        &mut open,
        label_column,
        out,
        options,
        device,
        on_event,
    )
}

/// The expression baselines on the same training and test cells.
fn run_baselines(
    source: &mut dyn CellSource,
    rows: &DataSplit,
    data: &TokenizedCells,
    codes: &[u32],
    classes: &[String],
    n_cells: usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<Value> {
    let t0 = Instant::now();
    let n_genes = source.gene_names().len();
    let input = source.path().display().to_string();
    let counts = read_all(source)?;
    if counts.n_cells() != n_cells {
        return Err(PipelineError::input(
            &input,
            format!("read {} cells, expected {n_cells}", counts.n_cells()),
        ));
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
    on_event(Event::Note(format!(
        "baselines on {k} PCs of the expression ({:.1} s; logistic regression: {} L-BFGS iterations)",
        t0.elapsed().as_secs_f64(),
        lr.iterations
    )));
    Ok(json!({
        "features": format!("PCA ({k} components) of log-normalized expression; HVG, scaling and PCA fitted on the training cells"),
        "logreg_pca": logreg,
        "knn_pca": knn,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

/// The classifier folder a fine-tuning run writes into `out`.
pub fn classifier_dir(out: &Path) -> PathBuf {
    out.join("classifier")
}
