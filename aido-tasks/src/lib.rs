//! # aido-tasks — downstream tasks of AIDO.Cell
//!
//! Cell-type annotation as the paper runs it (SPEC-tasks §1), and the baselines it is read
//! against:
//!
//! - [`head`]: [`CellTypeHeadConfig`] → [`CellTypeHead`] (pooling → optional non-affine batch
//!   norm → `H → 256 → ReLU → C`) and [`CellTypeClassifier`] (encoder + head);
//! - [`weights`]: the loss's class weights (the paper's, read as a cap; balanced; none);
//! - [`split`]: stratified seeded splits, or the user's split column;
//! - [`finetune`](mod@finetune): the resumable loop — weighted cross-entropy, selection on validation
//!   macro-F1, early stopping, every trainable mode of `aido_train::finetune::Trainable`, and
//!   the frozen-prefix cache;
//! - [`classifier`]: the folder `aido predict` loads, and prediction;
//! - [`baselines`]: PCA of log-normalized expression → logistic regression / 10-NN vote;
//! - [`perturb`]: perturbation conditions and GEARS's splits of them (`simulation`,
//!   `combo_seen0/1/2`), draw for draw with numpy's legacy RNG;
//! - [`gears`]: the GEARS model in burn (learned or encoder gene embeddings, SGConv over the
//!   co-expression and perturbation graphs, per-gene decoders);
//! - [`perturb_fit`]: perturbation data, GEARS training, prediction, the model folder;
//! - [`perturb_sim`]: a perturbation screen simulator with known effects;
//! - [`insilico`]: in-silico knockout / over-expression of a cell through the encoder;
//! - [`cells`]: tokenized cells held sparsely in memory for the epochs.
//!
//! Metrics come from `aido-eval` (accuracy, macro-F1, per-class F1, confusion), so every
//! number here is scored exactly as `aido evaluate` scores it.

pub mod baselines;
pub mod cells;
pub mod classifier;
pub mod error;
pub mod finetune;
pub mod gears;
pub mod head;
pub mod insilico;
pub mod perturb;
pub mod perturb_fit;
pub mod perturb_linear;
pub mod perturb_sim;
pub mod split;
pub mod weights;

pub use cells::TokenizedCells;
pub use classifier::{Classifier, ClassifierInfo, load_classifier, save_classifier};
pub use error::{Result, TaskError};
pub use finetune::{
    CacheKind, EpochRecord, Event, FinetuneConfig, FinetuneJob, FinetuneOutcome, finetune,
};
pub use head::{CellTypeClassifier, CellTypeHead, CellTypeHeadConfig};
pub use split::{DataSplit, split_from_values, stratified_split};
pub use weights::ClassWeights;
