//! The classifier folder `aido finetune` writes and `aido predict` reads:
//!
//! ```text
//! classifier/config.json, model.safetensors   the encoder, released layout (LoRA merged)
//! classifier/genes.tsv                        the model's gene vocabulary
//! classifier/head.mpk                         the head (burn record, full precision)
//! classifier/classifier.json                  classes, pooling, head sizes, training genes
//! ```

use std::fs;
use std::path::Path;

use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{AidoCell, AidoCellConfig, Pooling, lora, save_checkpoint};
use aido_tokenize::GeneVocab;
use aido_train::checkpoint::{recorder, write_atomic};
use burn::module::Module;
use burn::record::Recorder;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TaskError, io};
use crate::finetune::host;
use crate::head::{CellTypeClassifier, CellTypeHeadConfig};

/// The format tag of `classifier.json`.
pub const FORMAT: &str = "aido-cell-type-classifier/1";

/// `classifier.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// [`FORMAT`].
    pub format: String,
    /// Class names; column `j` of the probabilities is `classes[j]`.
    pub classes: Vec<String>,
    /// Pooling of the encoder output.
    pub pooling: String,
    /// Head width.
    pub head_hidden: usize,
    /// Head dropout (inactive at prediction).
    pub dropout: f64,
    /// Batch norm in the head.
    pub batch_norm: bool,
    /// Vocabulary positions measured in the training data (to check new data against).
    pub training_genes: Vec<u32>,
    /// Where it was trained: input file, label column, trainable part.
    pub trained_on: serde_json::Value,
}

impl ClassifierInfo {
    /// The head configuration.
    pub fn head_config(&self, d_model: usize) -> CellTypeHeadConfig {
        CellTypeHeadConfig::new(d_model, self.classes.len())
            .with_hidden(self.head_hidden)
            .with_dropout(self.dropout)
            .with_batch_norm(self.batch_norm)
    }
}

/// Writes the classifier folder through `dir.partial`, which then replaces `dir`.
pub fn save_classifier<B: Backend>(
    dir: &Path,
    model: &CellTypeClassifier<B>,
    cfg: &AidoCellConfig,
    vocab: &GeneVocab,
    info: &ClassifierInfo,
) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "classifier".into());
    let partial = dir.with_file_name(format!("{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    let mut bert = model.bert.clone();
    if lora::has_adapters(&bert) {
        bert = lora::merge(bert);
    }
    save_checkpoint(&AidoCell { bert, cls: None }, cfg, &partial)?;
    vocab.write_tsv(partial.join("genes.tsv"))?;
    let hp = partial.join("head");
    recorder()
        .record(model.head.clone().into_record(), hp.clone())
        .map_err(|e| TaskError::Checkpoint {
            path: hp.with_extension("mpk"),
            detail: e.to_string(),
        })?;
    let json = serde_json::to_vec_pretty(info).map_err(|e| TaskError::Checkpoint {
        path: partial.join("classifier.json"),
        detail: e.to_string(),
    })?;
    write_atomic(&partial.join("classifier.json"), &json)?;
    aido_tokenize::io_util::replace_dir(&partial, dir).map_err(io(dir))
}

/// A loaded classifier.
pub struct Classifier<B: Backend> {
    /// Encoder and head.
    pub model: CellTypeClassifier<B>,
    /// `classifier.json`.
    pub info: ClassifierInfo,
    /// The gene vocabulary.
    pub vocab: GeneVocab,
    /// The pooling.
    pub pooling: Pooling,
}

/// Loads a classifier folder written by [`save_classifier`].
pub fn load_classifier<B: Backend>(dir: &Path, device: &B::Device) -> Result<Classifier<B>> {
    let ip = dir.join("classifier.json");
    if !ip.is_file() {
        return Err(TaskError::Checkpoint {
            path: dir.to_path_buf(),
            detail: "not a classifier folder (no classifier.json): pass OUTDIR/classifier of `aido finetune`".into(),
        });
    }
    let text = fs::read_to_string(&ip).map_err(io(&ip))?;
    let info: ClassifierInfo = serde_json::from_str(&text).map_err(|e| TaskError::Checkpoint {
        path: ip.clone(),
        detail: e.to_string(),
    })?;
    if info.format != FORMAT {
        return Err(TaskError::Checkpoint {
            path: ip,
            detail: format!("format '{}', this build reads '{FORMAT}'", info.format),
        });
    }
    let pooling: Pooling = info
        .pooling
        .parse()
        .map_err(|e: String| TaskError::Checkpoint {
            path: ip.clone(),
            detail: e,
        })?;
    let vocab = GeneVocab::from_tsv(dir.join("genes.tsv"))?;
    let (enc, _) = load_checkpoint::<B>(dir, LoadMode::EncoderOnly, device)?;
    let bert = enc.bert;
    let hp = dir.join("head");
    let rec = recorder()
        .load(hp.clone(), device)
        .map_err(|e| TaskError::Checkpoint {
            path: hp.with_extension("mpk"),
            detail: e.to_string(),
        })?;
    let head = info
        .head_config(bert.hidden_size())
        .init::<B>(device)
        .load_record(rec);
    Ok(Classifier {
        model: CellTypeClassifier { bert, head },
        info,
        vocab,
        pooling,
    })
}

impl<B: Backend> Classifier<B> {
    /// Checks that data with presence mask `present [S]` measures enough of the genes the
    /// classifier was trained on: at least half, or an error saying how many.
    pub fn check_genes(&self, present: &[u8], file: &Path) -> Result<()> {
        let t = &self.info.training_genes;
        let seen = t
            .iter()
            .filter(|&&p| present.get(p as usize).copied() == Some(1))
            .count();
        if t.is_empty() || 2 * seen < t.len() {
            return Err(TaskError::Genes(format!(
                "{}: measures {seen} of the {} genes the classifier was trained on (at least half are needed): \
                 the data's genes do not align with the classifier's (check `gene_column`, or the species/panel)",
                file.display(),
                t.len()
            )));
        }
        Ok(())
    }

    /// Class probabilities `[B, C]` (row-major) of `values [B, S]`.
    pub fn predict_proba(
        &self,
        values: &[f32],
        b: usize,
        present: &[u8],
        device: &B::Device,
    ) -> Result<Vec<f32>> {
        let s = self.model.bert.seq_len();
        let x = Tensor::<B, 2>::from_data(TensorData::new(values.to_vec(), [b, s]), device);
        let l = self.model.forward(x, present, self.pooling)?;
        host(softmax(l, 1))
    }
}
