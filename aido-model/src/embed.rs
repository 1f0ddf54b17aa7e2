//! Cell and gene embeddings from `last_hidden_state` (SPEC-model §6).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::Array2;

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
pub fn pool<B: Backend>(h: Tensor<B, 3>, present: &[u8], pooling: Pooling) -> Tensor<B, 2> {
    let [b, s, hd] = h.dims();
    assert_eq!(
        present.len(),
        s,
        "present mask has {} positions, hidden states {s}",
        present.len()
    );
    let g = s - 2;
    if pooling == Pooling::Max {
        return h.slice([0..b, 0..g, 0..hd]).max_dim(1).reshape([b, hd]);
    }
    let w: Vec<f32> = (0..s)
        .map(|p| match pooling {
            Pooling::Mean => 1.0,
            Pooling::PresentMean => f32::from(present[p]),
            _ => {
                if p < g {
                    f32::from(present[p])
                } else {
                    0.0
                }
            }
        })
        .collect();
    let n: f32 = w.iter().sum();
    let mask = Tensor::<B, 3>::from_data(TensorData::new(w, [1, s, 1]), &h.device());
    (h * mask).sum_dim(1).reshape([b, hd]) / n.max(1.0)
}

/// A `[N, K]` tensor as an `ndarray::Array2<f32>`.
pub fn to_array2<B: Backend>(t: Tensor<B, 2>) -> crate::Result<Array2<f32>> {
    let [n, k] = t.dims();
    let v: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| crate::ModelError::Config(format!("tensor to host: {e:?}")))?;
    Array2::from_shape_vec((n, k), v)
        .map_err(|e| crate::ModelError::Config(format!("tensor to host: {e}")))
}
