//! The cell-type classification head (SPEC-tasks §1) and the classifier it makes with the
//! encoder.
//!
//! `last_hidden_state [B, S, H]` → pooling over positions (max over the gene positions as the
//! paper's head, mean, present-mean) `[B, H]` → optional non-affine batch norm (scFoundation's
//! head) → `Linear(H, hidden)` → ReLU → dropout → `Linear(hidden, C)` → logits `[B, C]`.

use aido_model::embed::pool;
use aido_model::{AidoCellModel, Pooling};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use crate::error::Result;

/// Sizes of the head.
#[derive(Config, Debug, PartialEq)]
pub struct CellTypeHeadConfig {
    /// Input width `H` (the encoder's hidden size).
    pub d_model: usize,
    /// Number of classes `C`.
    pub n_classes: usize,
    /// Width of the hidden layer (the paper: 256).
    #[config(default = 256)]
    pub hidden: usize,
    /// Dropout after the ReLU (0: none).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// A non-affine batch norm of the pooled input (scFoundation's head).
    #[config(default = false)]
    pub batch_norm: bool,
}

/// `[B, H]` pooled embeddings → `[B, C]` logits.
#[derive(Module, Debug)]
pub struct CellTypeHead<B: Backend> {
    /// Non-affine batch norm (γ = 1, β = 0, not trained; running statistics at inference).
    pub norm: Option<BatchNorm<B>>,
    /// `H → hidden`.
    pub fc1: Linear<B>,
    /// `hidden → C`.
    pub fc2: Linear<B>,
    /// Dropout after the ReLU (active only on an autodiff backend, i.e. in training).
    pub dropout: Dropout,
}

impl CellTypeHeadConfig {
    /// A freshly initialized head (burn's default Kaiming-uniform linear layers).
    pub fn init<B: Backend>(&self, device: &B::Device) -> CellTypeHead<B> {
        CellTypeHead {
            norm: self
                .batch_norm
                .then(|| BatchNormConfig::new(self.d_model).init(device).no_grad()),
            fc1: LinearConfig::new(self.d_model, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.n_classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl<B: Backend> CellTypeHead<B> {
    /// `x: [B, H]` → logits `[B, C]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = match &self.norm {
            Some(n) => n.forward(x),
            None => x,
        };
        let x = self.dropout.forward(relu(self.fc1.forward(x)));
        self.fc2.forward(x)
    }
}

/// The encoder with the head: `values [B, S]` → logits `[B, C]`.
#[derive(Module, Debug)]
pub struct CellTypeClassifier<B: Backend> {
    /// The encoder (`bert.*` of the checkpoint).
    pub bert: AidoCellModel<B>,
    /// The head.
    pub head: CellTypeHead<B>,
}

impl<B: Backend> CellTypeClassifier<B> {
    /// Pools `last_hidden_state [B, S, H]` with the dataset's presence mask `present [S]` and
    /// applies the head: `[B, C]`.
    pub fn from_hidden(
        &self,
        last: Tensor<B, 3>,
        present: &[u8],
        pooling: Pooling,
    ) -> Result<Tensor<B, 2>> {
        Ok(self.head.forward(pool(last, present, pooling)?))
    }

    /// `values [B, S]` → logits `[B, C]` (the whole encoder).
    pub fn forward(
        &self,
        values: Tensor<B, 2>,
        present: &[u8],
        pooling: Pooling,
    ) -> Result<Tensor<B, 2>> {
        let last = self.bert.forward(values, false)?.last_hidden_state;
        self.from_hidden(last, present, pooling)
    }

    /// The residual stream entering block `start` `[B, S, H]` → logits `[B, C]`: blocks
    /// `start..L`, the final norm, pooling and the head.
    pub fn forward_from_block(
        &self,
        h: Tensor<B, 3>,
        start: usize,
        present: &[u8],
        pooling: Pooling,
    ) -> Result<Tensor<B, 2>> {
        self.from_hidden(self.bert.forward_suffix(h, start), present, pooling)
    }
}
