//! Cell and gene embeddings from `last_hidden_state` (SPEC-model §6), as tensors and as
//! `ndarray` arrays.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ndarray::{Array2, Array3};

use crate::model::AidoCellModel;
use crate::{ModelError, Result};

/// How a cell embedding pools `last_hidden_state [B, S, H]` over positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Mean over the genes present in the dataset plus the two depth positions (the authors'
    /// standalone `embed.py`; default).
    #[default]
    PresentMean,
    /// Mean over all `G + 2` positions.
    Mean,
    /// Mean over present genes only (no depth positions).
    PresentOnlyMean,
    /// Element-wise max over the `G` gene positions.
    Max,
}

impl Pooling {
    /// The command-line name (`present-mean`, `mean`, `present-only-mean`, `max`).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::PresentMean => "present-mean",
            Pooling::Mean => "mean",
            Pooling::PresentOnlyMean => "present-only-mean",
            Pooling::Max => "max",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "present-mean" => Ok(Pooling::PresentMean),
            "mean" => Ok(Pooling::Mean),
            "present-only-mean" => Ok(Pooling::PresentOnlyMean),
            "max" => Ok(Pooling::Max),
            o => Err(format!(
                "unknown pooling '{o}' (present-mean, mean, present-only-mean, max)"
            )),
        }
    }
}

/// Pools `h: [B, S, H]` with the per-position presence mask `present: [S]` (1 = measured; the
/// last two positions are the depth tokens) into `[B, H]`.
///
/// Errors when the mask length differs from `S`, or when a present-gene pooling finds no
/// present position (it would divide by zero).
pub fn pool<B: Backend>(h: Tensor<B, 3>, present: &[u8], pooling: Pooling) -> Result<Tensor<B, 2>> {
    let [b, s, hd] = h.dims();
    if present.len() != s || s < 3 {
        return Err(ModelError::Input(format!(
            "presence mask has {} positions, the hidden states {s} (G + 2 with G ≥ 1)",
            present.len()
        )));
    }
    let g = s - 2;
    if pooling == Pooling::Max {
        return Ok(h.slice([0..b, 0..g, 0..hd]).max_dim(1).reshape([b, hd]));
    }
    let w: Vec<f32> = (0..s)
        .map(|p| match pooling {
            Pooling::Mean => 1.0,
            Pooling::PresentMean => f32::from(present[p]),
            _ if p < g => f32::from(present[p]),
            _ => 0.0,
        })
        .collect();
    let n: f32 = w.iter().sum();
    if n == 0.0 {
        return Err(ModelError::Input(format!(
            "{} pooling: no gene of the model is present in the data",
            pooling.name()
        )));
    }
    let mask = Tensor::<B, 3>::from_data(TensorData::new(w, [1, s, 1]), &h.device());
    Ok((h * mask).sum_dim(1).reshape([b, hd]) / n)
}

/// Contextual gene embeddings: the hidden states of the given positions, `h: [B, S, H]` →
/// `[B, positions.len(), H]`.
pub fn gene_embeddings<B: Backend>(h: Tensor<B, 3>, positions: &[usize]) -> Result<Tensor<B, 3>> {
    let [_, s, _] = h.dims();
    if let Some(&p) = positions.iter().find(|&&p| p >= s) {
        return Err(ModelError::Input(format!(
            "gene position {p} is outside the {s} positions of the model"
        )));
    }
    let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [positions.len()]), &h.device());
    Ok(h.select(1, idx))
}

fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| ModelError::Device(format!("copying a tensor to the host: {e:?}")))
}

/// A `[N, K]` tensor as an `ndarray::Array2<f32>`.
pub fn to_array2<B: Backend>(t: Tensor<B, 2>) -> Result<Array2<f32>> {
    let [n, k] = t.dims();
    Array2::from_shape_vec((n, k), host_vec(t)?)
        .map_err(|e| ModelError::Device(format!("tensor to host: {e}")))
}

/// A `[N, K, H]` tensor as an `ndarray::Array3<f32>`.
pub fn to_array3<B: Backend>(t: Tensor<B, 3>) -> Result<Array3<f32>> {
    let [n, k, h] = t.dims();
    Array3::from_shape_vec((n, k, h), host_vec(t)?)
        .map_err(|e| ModelError::Device(format!("tensor to host: {e}")))
}

/// Embeddings of one batch of cells.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// Pooled cell embeddings `[B, H]`.
    pub cells: Array2<f32>,
    /// Contextual embeddings of the selected genes `[B, n_selected, H]`, when genes were selected.
    pub genes: Option<Array3<f32>>,
}

/// Turns batches of preprocessed cells (`aido-tokenize` output, `[B, G + 2]`) into cell
/// embeddings and, optionally, contextual embeddings of selected genes.
///
/// Outputs are checked: a NaN or infinity is an error naming the cell, never passed on.
#[derive(Debug)]
pub struct Embedder<B: Backend> {
    model: AidoCellModel<B>,
    device: B::Device,
    present: Vec<u8>,
    pooling: Pooling,
    gene_positions: Vec<usize>,
}

impl<B: Backend> Embedder<B> {
    /// `present: [G + 2]` is the dataset's presence mask (see `aido_tokenize::Alignment`);
    /// its length must equal the model's sequence length.
    pub fn new(
        model: AidoCellModel<B>,
        device: B::Device,
        present: Vec<u8>,
        pooling: Pooling,
    ) -> Result<Self> {
        let seq = model.seq_len();
        if present.len() != seq {
            return Err(ModelError::Input(format!(
                "the gene vocabulary gives {} positions (genes + 2) but the model has {seq}: use the gene list the checkpoint was trained with",
                present.len()
            )));
        }
        Ok(Self {
            model,
            device,
            present,
            pooling,
            gene_positions: Vec::new(),
        })
    }

    /// Also return the contextual embeddings of these vocabulary positions.
    pub fn with_gene_positions(mut self, positions: Vec<usize>) -> Result<Self> {
        let g = self.present.len() - 2;
        if let Some(&p) = positions.iter().find(|&&p| p >= g) {
            return Err(ModelError::Input(format!(
                "gene position {p} is not one of the model's {g} genes"
            )));
        }
        self.gene_positions = positions;
        Ok(self)
    }

    /// Hidden size `H` of the embeddings.
    pub fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }

    /// The model.
    pub fn model(&self) -> &AidoCellModel<B> {
        &self.model
    }

    /// Embeds `values: [B, G + 2]`.
    pub fn embed(&self, values: &Array2<f32>) -> Result<Embeddings> {
        let (b, s) = values.dim();
        if s != self.present.len() {
            return Err(ModelError::Input(format!(
                "cells have {s} values, the model expects {}",
                self.present.len()
            )));
        }
        if b == 0 {
            // A window whose cells were all skipped (`--skip-empty`): nothing to run.
            let h = self.hidden_size();
            return Ok(Embeddings {
                cells: Array2::zeros((0, h)),
                genes: (!self.gene_positions.is_empty())
                    .then(|| Array3::zeros((0, self.gene_positions.len(), h))),
            });
        }
        let data: Vec<f32> = values.iter().copied().collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(data, [b, s]), &self.device);
        let h = self.model.forward(x, false)?.last_hidden_state;
        let genes = if self.gene_positions.is_empty() {
            None
        } else {
            let g = to_array3(gene_embeddings(h.clone(), &self.gene_positions)?)?;
            check_finite(g.as_slice().unwrap_or(&[]), b, "gene embedding")?;
            Some(g)
        };
        let cells = to_array2(pool(h, &self.present, self.pooling)?)?;
        check_finite(cells.as_slice().unwrap_or(&[]), b, "cell embedding")?;
        Ok(Embeddings { cells, genes })
    }
}

/// Errors with the first row (of `rows` equal rows) that holds a NaN or infinity.
fn check_finite(v: &[f32], rows: usize, what: &'static str) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let per = v.len() / rows;
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::NonFinite {
            cell: i / per.max(1),
            what,
        }),
    }
}
