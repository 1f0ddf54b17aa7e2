//! Edge cases of `Embedder::embed` found in review: a zero-row batch (every cell of a window
//! skipped by `--skip-empty`) returns zero rows instead of running the model on an empty tensor;
//! a batch of the wrong width is an error, not an assertion.
#![allow(clippy::unwrap_used)]

use aido_model::{AidoCellConfig, Cpu, Embedder, Pooling};
use ndarray::Array2;

#[test]
fn zero_rows_and_wrong_width() {
    let dev = Default::default();
    let cfg = AidoCellConfig::new(6, 8, 1, 2, 16);
    let model = cfg.init::<Cpu>(false, &dev).bert;
    let e = Embedder::new(model, dev, vec![1; 8], Pooling::PresentMean)
        .unwrap()
        .with_gene_positions(vec![0, 3])
        .unwrap();
    let out = e.embed(&Array2::zeros((0, 8))).unwrap();
    assert_eq!(out.cells.dim(), (0, 8));
    assert_eq!(out.genes.unwrap().dim(), (0, 2, 8));
    let err = e.embed(&Array2::zeros((2, 6))).unwrap_err().to_string();
    assert!(
        err.contains("cells have 6 values, the model expects 8"),
        "{err}"
    );
    let ok = e.embed(&Array2::from_elem((2, 8), 0.5)).unwrap();
    assert_eq!(ok.cells.dim(), (2, 8));
}

/// `forward` of a `[B, G]` input (no depth tokens) or any other width than the position table
/// is an error (it ran with a wrong meaning, or asserted, before).
#[test]
fn forward_refuses_a_wrong_sequence_length() {
    use aido_model::burn::tensor::{Tensor, TensorData};
    let dev = Default::default();
    let model = AidoCellConfig::new(6, 8, 1, 2, 16)
        .init::<Cpu>(false, &dev)
        .bert;
    let x = |s: usize| Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.5f32; s], [1, s]), &dev);
    let e = model.forward(x(6), false).err().unwrap().to_string();
    assert!(
        e.contains("6 positions") && e.contains("depth tokens are missing"),
        "{e}"
    );
    assert!(model.forward(x(9), false).is_err());
    assert!(model.forward_prefix(x(7), 1).is_err());
    assert_eq!(
        model.forward(x(8), false).unwrap().last_hidden_state.dims(),
        [1, 8, 8]
    );
}
