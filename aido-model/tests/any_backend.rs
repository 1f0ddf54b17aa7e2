//! The encoder runs on a burn backend this crate has no kernels for (`NdArray`): attention
//! takes the generic path, the whole model reproduces the authors' outputs on the fixture
//! checkpoint (`testdata/fixtures/aido_cell/tiny_ln_nobias/cases.safetensors`, 5e-5 as in the
//! fixtures README), and `Autodiff<NdArray>` gradients equal those of `Autodiff<Flex>` (whose
//! kernels `tests/attention.rs` checks against the naive formula).
#![allow(clippy::unwrap_used)]

use aido_model::attention::{attention, attention_with_lse};
use aido_model::burn::backend::{Autodiff, NdArray};
use aido_model::burn::tensor::backend::Backend;
use aido_model::burn::tensor::{Distribution, Tensor, TensorData};
use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{Cpu, Embedder, Pooling};
use aido_tokenize::shared::testdata_path;

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn on<B: Backend>(v: &[f32], shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

#[test]
fn attention_and_gradients_on_ndarray_equal_the_cpu_kernels() {
    let shape = [2, 3, 37, 16];
    let r = || {
        host(Tensor::<Cpu, 4>::random(
            shape,
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        ))
    };
    let (q, k, v, w) = (r(), r(), r(), r());
    // Dispatch: NdArray takes the generic path, the CPU backend its kernels (the other test
    // of this file makes no CPU-backend calls, so the process-wide counter is ours).
    let runs = aido_model::attention::cpu_kernel_runs();
    let a = host(attention(
        on::<NdArray>(&q, shape),
        on(&k, shape),
        on(&v, shape),
    ));
    assert_eq!(aido_model::attention::cpu_kernel_runs(), runs);
    let b = host(attention(
        on::<Cpu>(&q, shape),
        on(&k, shape),
        on(&v, shape),
    ));
    assert_eq!(aido_model::attention::cpu_kernel_runs(), runs + 1);
    assert!(max_diff(&a, &b) <= 1e-5, "forward {}", max_diff(&a, &b));
    let (_, la) = attention_with_lse(on::<NdArray>(&q, shape), on(&k, shape), on(&v, shape));
    let (_, lb) = attention_with_lse(on::<Cpu>(&q, shape), on(&k, shape), on(&v, shape));
    assert!(max_diff(&host(la), &host(lb)) <= 1e-5);
    // loss = Σ out ∘ w, through each backend's autodiff.
    fn grads<B: aido_model::burn::tensor::backend::AutodiffBackend>(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        w: &[f32],
        shape: [usize; 4],
    ) -> Vec<Vec<f32>> {
        let (q, k, v) = (
            on::<B>(q, shape).require_grad(),
            on::<B>(k, shape).require_grad(),
            on::<B>(v, shape).require_grad(),
        );
        let loss = (attention(q.clone(), k.clone(), v.clone()) * on::<B>(w, shape)).sum();
        let g = loss.backward();
        [q, k, v]
            .into_iter()
            .map(|t| host(t.grad(&g).unwrap()))
            .collect()
    }
    let ga = grads::<Autodiff<NdArray>>(&q, &k, &v, &w, shape);
    let before = aido_model::attention::cpu_kernel_runs();
    let gb = grads::<Autodiff<Cpu>>(&q, &k, &v, &w, shape);
    // Autodiff<Cpu>: the kernel forward (with log-sum-exp) and the kernel backward.
    assert_eq!(aido_model::attention::cpu_kernel_runs(), before + 2);
    for (name, (x, y)) in ["dq", "dk", "dv"].iter().zip(ga.iter().zip(&gb)) {
        assert!(max_diff(x, y) <= 1e-4, "{name} {}", max_diff(x, y));
    }
}

#[test]
fn the_model_on_ndarray_reproduces_the_authors_outputs() {
    let dir = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let dev = Default::default();
    let (model, _) = load_checkpoint::<NdArray>(&dir, LoadMode::EncoderOnly, &dev).unwrap();
    let bytes = std::fs::read(dir.join("cases.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        let d = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), d)
    };
    let (s, v) = f32s("input_values");
    let values = Tensor::<NdArray, 2>::from_data(TensorData::new(v.clone(), [s[0], s[1]]), &dev);
    let out = model.bert.forward(values, false).unwrap();
    let want = f32s("last_hidden_state").1;
    let d = max_diff(&host(out.last_hidden_state), &want);
    assert!(d <= 5e-5, "last_hidden_state {d}");
    // The Embedder works on it too: pooled embeddings as the authors' mean pooling.
    let (_, mask) = f32s("pool_mask");
    let present: Vec<u8> = mask[..s[1]].iter().map(|&m| (m > 0.0) as u8).collect();
    let (model, _) = load_checkpoint::<NdArray>(&dir, LoadMode::EncoderOnly, &dev).unwrap();
    let emb = Embedder::new(model.bert, dev, present, Pooling::PresentMean).unwrap();
    let x = ndarray::Array2::from_shape_vec((s[0], s[1]), v).unwrap();
    let e = emb.embed(&x).unwrap();
    assert_eq!(e.cells.dim(), (s[0], 32));
}
