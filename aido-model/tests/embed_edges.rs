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

/// A cell's embedding is a function of the cell alone: not of its batch-mates, the batch size,
/// its position in the batch, or the thread count (a reported failure of other models). Bit for
/// bit on the build machine (2026-12-03); the bound leaves room for another CPU's kernels.
#[test]
fn embedding_is_a_pure_function_of_the_cell() {
    use aido_model::burn::tensor::backend::Backend;
    let dev = Default::default();
    Cpu::seed(&dev, 9);
    let g = 150;
    let model = AidoCellConfig::new(g, 32, 2, 4, 64)
        .init::<Cpu>(false, &dev)
        .bert;
    let e = Embedder::new(model, dev, vec![1; g + 2], Pooling::PresentMean)
        .unwrap()
        .with_gene_positions(vec![3, 77])
        .unwrap();
    // Seven cells of preprocessed-looking values (log1p range), depth tokens 4.x.
    let n = 7;
    let mut cells = Array2::<f32>::zeros((n, g + 2));
    for c in 0..n {
        for j in 0..g {
            let v = ((c * 31 + j * 17) % 23) as f32 / 23.0;
            cells[[c, j]] = if v > 0.55 { (1.0 + 9.0 * v).ln() } else { 0.0 };
        }
        cells[[c, g]] = 4.0 + c as f32 * 0.1;
        cells[[c, g + 1]] = 4.0 + c as f32 * 0.1;
    }
    let whole = e.embed(&cells).unwrap();
    let row = |m: &Array2<f32>, i: usize| m.row(i).to_vec();
    let close = |a: &[f32], b: &[f32], what: &str| {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-6, "{what}: max |Δ| {d}");
    };
    // Alone, in pairs, reversed.
    for c in 0..n {
        let one = e
            .embed(&cells.slice(ndarray::s![c..c + 1, ..]).to_owned())
            .unwrap();
        close(
            &row(&whole.cells, c),
            &row(&one.cells, 0),
            &format!("cell {c} alone"),
        );
        let gw = whole.genes.as_ref().unwrap();
        let go = one.genes.as_ref().unwrap();
        for k in 0..2 {
            let a: Vec<f32> = (0..32).map(|h| gw[[c, k, h]]).collect();
            let b: Vec<f32> = (0..32).map(|h| go[[0, k, h]]).collect();
            close(&a, &b, &format!("cell {c} gene {k} alone"));
        }
    }
    let mut rev = cells.clone();
    for c in 0..n {
        rev.row_mut(c).assign(&cells.row(n - 1 - c));
    }
    let r = e.embed(&rev).unwrap();
    for c in 0..n {
        close(
            &row(&whole.cells, c),
            &row(&r.cells, n - 1 - c),
            &format!("cell {c} reversed"),
        );
    }
    // One thread.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let single = pool.install(|| e.embed(&cells).unwrap());
    for c in 0..n {
        close(
            &row(&whole.cells, c),
            &row(&single.cells, c),
            &format!("cell {c}, 1 thread"),
        );
    }
}
