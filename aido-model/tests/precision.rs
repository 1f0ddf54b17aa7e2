//! bf16 mixed precision under `Autodiff`: gradients reach the f32 master weights, in f32, and
//! agree with the f32 run within bf16's resolution; a backend without bf16 is refused by name.
//! The f32 gradients are the reference: `tests/any_backend.rs` and `tests/attention.rs` check
//! them against the naive formula and the generic backend, the parity tests check the forward
//! against the authors' code.
#![allow(clippy::unwrap_used)]

use aido_model::burn::backend::{Autodiff, NdArray};
use aido_model::burn::module::AutodiffModule;
use aido_model::burn::tensor::{DType, Tensor, TensorData};
use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{AidoCell, Cpu, ModelError, Precision};
use aido_tokenize::shared::testdata_path;

type Ad = Autodiff<Cpu>;

/// Every parameter's gradient (in module order) of the head's squared output.
fn grads(model: &AidoCell<Ad>, values: Tensor<Ad, 2>) -> Vec<(Vec<f32>, DType)> {
    let out = model.bert.forward(values, false).unwrap().last_hidden_state;
    assert_eq!(out.dtype(), DType::F32);
    let y = model.head(out).unwrap();
    let g = y.powi_scalar(2).mean().backward();
    let mut all = Vec::new();
    let mut visit = |t: Tensor<Ad, 2>| {
        let gr = t.grad(&g).unwrap();
        let dtype = gr.dtype();
        all.push((gr.into_data().convert::<f32>().into_vec().unwrap(), dtype));
    };
    for l in &model.bert.encoder.layer {
        let sa = &l.attention.self_attn;
        for lin in [&sa.query, &sa.key, &sa.value, &l.attention.output.dense] {
            visit(lin.weight.val());
        }
        for lin in [&l.mlp.up_proj, &l.mlp.gate_proj, &l.mlp.down_proj] {
            visit(lin.weight.val());
        }
    }
    visit(model.bert.position_embedding.weight.val());
    all
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn bf16_gradients_are_f32_and_track_the_f32_gradients() {
    let dev = Default::default();
    let dir = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let (model, cfg) = load_checkpoint::<Ad>(&dir, LoadMode::Full, &dev).unwrap();
    let s = cfg.seq_len();
    let values: Vec<f32> = (0..2 * s)
        .map(|i| ((i * 37 % 11) as f32 * 0.3).ln_1p())
        .collect();
    let x = || Tensor::<Ad, 2>::from_data(TensorData::new(values.clone(), [2, s]), &dev);
    let want = grads(&model, x());
    let mut low = model.clone();
    low.bert.set_precision(Precision::Bf16).unwrap();
    let runs = aido_model::attention::cpu_bf16_kernel_runs();
    let got = grads(&low, x());
    // Forward and backward of every layer on the bf16 kernels where the CPU has AVX512-BF16
    // (else f32 kernels on rounded-up inputs: reported as not run).
    let ran = aido_model::attention::cpu_bf16_kernel_runs() - runs;
    if aido_kernels::KernelPath::Avx512Bf16.is_supported() {
        let layers = model.bert.encoder.layer.len();
        assert!(ran >= 2 * layers, "bf16 kernels ran {ran} times");
        eprintln!("bf16 attention path avx512-bf16 (forward and backward): ran ({ran} calls)");
    } else {
        eprintln!("bf16 attention path avx512-bf16: NOT RUN (this CPU lacks AVX512-BF16)");
    }
    assert_eq!(got.len(), want.len());
    let mut worst = 0.0f64;
    let mut differs = false;
    for (i, ((g, gd), (w, _))) in got.iter().zip(&want).enumerate() {
        assert_eq!(*gd, DType::F32, "parameter {i}: gradient dtype");
        let e = rel_err(g, w);
        worst = worst.max(e);
        differs |= e > 1e-5;
    }
    eprintln!("bf16 vs f32 gradients: worst relative error {worst:.2e}");
    assert!(worst <= 5e-2, "bf16 gradients drift from f32: {worst}");
    assert!(differs, "the bf16 run computed in f32");
    // The master weights stay f32 after a precision switch (and back).
    let back = {
        let mut m = low.clone();
        m.bert.set_precision(Precision::F32).unwrap();
        m
    };
    assert_eq!(
        back.bert.encoder.layer[0]
            .attention
            .self_attn
            .query
            .weight
            .val()
            .dtype(),
        DType::F32
    );
    // The f32 switch-back is bit-identical to the original.
    let a = grads(&back, x());
    assert!(a.iter().zip(&want).all(|((p, _), (q, _))| p == q));
    // Valid (non-autodiff) copies keep the precision.
    assert_eq!(low.valid().bert.precision(), Precision::Bf16);
}

#[test]
fn a_backend_without_bf16_is_refused_by_name() {
    let dir = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let (mut model, _) =
        load_checkpoint::<NdArray>(&dir, LoadMode::EncoderOnly, &Default::default()).unwrap();
    let err = model.bert.set_precision(Precision::Bf16).unwrap_err();
    assert!(matches!(err, ModelError::Device(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ndarray") && msg.contains("bf16"), "{msg}");
    assert_eq!(model.bert.precision(), Precision::F32, "unchanged");
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    assert!("fp16".parse::<Precision>().is_err());
}
