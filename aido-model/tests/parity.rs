//! Parity with the authors' PyTorch code: every case in `testdata/fixtures/aido_cell/`
//! (outputs of `CellFoundationForMaskedLM` on random-weight checkpoints in the released layout).
//! Tolerances (fixtures README §8): 5e-5 absolute for hidden states and head output, 1e-5 for
//! pooled cell embeddings.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use aido_model::embed::pool;
use aido_model::load::load_weights;
use aido_model::{Cpu, LoadMode, Pooling};
use aido_tokenize::PreprocessConfig;
use aido_tokenize::shared::testdata_path;
use burn::tensor::{Tensor, TensorData};

struct Case {
    t: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Case {
    fn load(folder: &str) -> Case {
        let bytes = std::fs::read(testdata_path(&format!(
            "fixtures/aido_cell/{folder}/cases.safetensors"
        )))
        .unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let d = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (n, (v.shape().to_vec(), d))
            })
            .collect();
        Case { t }
    }
    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.t
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor {name}"))
    }
    fn tensor2(&self, name: &str) -> Tensor<Cpu, 2> {
        let (s, d) = self.get(name);
        Tensor::from_data(
            TensorData::new(d.clone(), [s[0], s[1]]),
            &Default::default(),
        )
    }
}

fn max_diff<const D: usize>(got: Tensor<Cpu, D>, want: &[f32]) -> f32 {
    let g: Vec<f32> = got.into_data().into_vec().unwrap();
    assert_eq!(g.len(), want.len());
    g.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check_tiny(folder: &str, weights: &str, n_layers: usize) {
    let dir = testdata_path(&format!("fixtures/aido_cell/{folder}"));
    let (model, cfg) = load_weights::<Cpu>(
        &dir.join("config.json"),
        &dir.join(weights),
        LoadMode::Full,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(cfg.num_hidden_layers, n_layers);
    let c = Case::load(folder);
    let out = model.bert.forward(c.tensor2("input_values"), true).unwrap();
    let hs = out.hidden_states.unwrap();
    assert_eq!(hs.len(), n_layers + 1, "L + 1 hidden states");
    for (i, h) in hs.into_iter().enumerate() {
        let d = max_diff(h, &c.get(&format!("hidden_states_{i}")).1);
        assert!(
            d <= 5e-5,
            "{folder}/{weights}: hidden_states_{i} max |Δ| = {d}"
        );
    }
    let d = max_diff(out.last_hidden_state.clone(), &c.get("last_hidden_state").1);
    assert!(d <= 5e-5, "{folder}/{weights}: last_hidden_state {d}");
    let logits = model.head(out.last_hidden_state.clone()).unwrap();
    let d = max_diff(logits, &c.get("logits").1);
    assert!(d <= 5e-5, "{folder}/{weights}: logits {d}");
    // pool_mask is all ones for the tiny cases: 64 present genes + 2 depth positions.
    let present: Vec<u8> = c.get("pool_mask").1[..66]
        .iter()
        .map(|&x| x as u8)
        .collect();
    let emb = pool(out.last_hidden_state, &present, Pooling::PresentMean).unwrap();
    let d = max_diff(emb, &c.get("cell_embedding_mean").1);
    assert!(d <= 1e-5, "{folder}/{weights}: cell_embedding_mean {d}");
    // Mask (-1) and pad (-2) inputs.
    let special = c.tensor2("input_values_special");
    let d = max_diff(
        model.bert.embed(special.clone()).unwrap(),
        &c.get("hidden_states_special_0").1,
    );
    assert!(d <= 5e-5, "{folder}/{weights}: hidden_states_special_0 {d}");
    let out = model.bert.forward(special, false).unwrap();
    let d = max_diff(
        out.last_hidden_state.clone(),
        &c.get("last_hidden_state_special").1,
    );
    assert!(
        d <= 5e-5,
        "{folder}/{weights}: last_hidden_state_special {d}"
    );
    let d = max_diff(
        model.head(out.last_hidden_state).unwrap(),
        &c.get("logits_special").1,
    );
    assert!(d <= 5e-5, "{folder}/{weights}: logits_special {d}");
    // The CPU kernels ran on all of it without an error (a failure would have fallen back to
    // the generic path and still matched).
    assert_eq!(aido_model::attention::cpu_kernel_errors(), 0);
}

#[test]
fn tiny_layernorm_no_bias_safetensors_and_bin() {
    check_tiny("tiny_ln_nobias", "model.safetensors", 3);
    check_tiny("tiny_ln_nobias", "pytorch_model.bin", 3);
}

#[test]
fn tiny_rmsnorm_bias_safetensors_and_bin() {
    check_tiny("tiny_rms_bias", "model.safetensors", 2);
    check_tiny("tiny_rms_bias", "pytorch_model.bin", 2);
}

#[test]
fn full_length_3m_two_real_cells() {
    let dir = testdata_path("fixtures/aido_cell/aido_cell_3m_random");
    let (model, cfg) =
        aido_model::load_checkpoint::<Cpu>(Path::new(&dir), LoadMode::Full, &Default::default())
            .unwrap();
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.seq_len()),
        (128, 6, 19_266)
    );
    let c = Case::load("aido_cell_3m_random");
    let (g, s) = (19_264, 19_266);
    let counts = &c.get("counts").1;
    let mask = &c.get("pool_mask").1;
    let want_emb = &c.get("cell_embedding_mean").1;
    let want_logits = &c.get("logits").1;
    for cell in 0..2 {
        // Preprocessing by aido-tokenize from the stored raw counts.
        let values = PreprocessConfig::default()
            .dense_row(&counts[cell * g..(cell + 1) * g])
            .unwrap();
        let x = Tensor::<Cpu, 2>::from_data(TensorData::new(values, [1, s]), &Default::default());
        let out = model.bert.forward(x, false).unwrap();
        if cell == 0 {
            // The repository keeps the reference rows listed in `last_hidden_state_rows`
            // (every 8th position and the two depth positions; testdata/README.md).
            let rows: Vec<usize> = c
                .get("last_hidden_state_rows")
                .1
                .iter()
                .map(|&r| r as usize)
                .collect();
            let h: Vec<f32> = out
                .last_hidden_state
                .clone()
                .into_data()
                .into_vec()
                .unwrap();
            let got: Vec<f32> = rows
                .iter()
                .flat_map(|&r| h[r * 128..(r + 1) * 128].iter().copied())
                .collect();
            let want = &c.get("last_hidden_state").1;
            assert_eq!(got.len(), want.len());
            let d = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d <= 5e-5, "3M last_hidden_state max |Δ| = {d}");
        }
        let d = max_diff(
            model.head(out.last_hidden_state.clone()).unwrap(),
            &want_logits[cell * s..(cell + 1) * s],
        );
        assert!(d <= 5e-5, "3M logits cell {cell}: {d}");
        let present: Vec<u8> = mask[cell * s..(cell + 1) * s]
            .iter()
            .map(|&x| x as u8)
            .collect();
        let emb = pool(out.last_hidden_state, &present, Pooling::PresentMean).unwrap();
        let d = max_diff(emb, &want_emb[cell * 128..(cell + 1) * 128]);
        assert!(d <= 1e-5, "3M cell_embedding_mean cell {cell}: {d}");
    }
}

#[test]
fn burnpack_roundtrip_keeps_outputs() {
    let dir = testdata_path("fixtures/aido_cell/tiny_rms_bias");
    let (model, cfg) =
        aido_model::load_checkpoint::<Cpu>(&dir, LoadMode::Full, &Default::default()).unwrap();
    let tmp = std::env::temp_dir().join(format!("aido-bpk-{}.bpk", std::process::id()));
    aido_model::load::save_burnpack(&model, &tmp).unwrap();
    let back =
        aido_model::load::load_burnpack::<Cpu>(&cfg, true, &tmp, &Default::default()).unwrap();
    let _ = std::fs::remove_file(&tmp);
    let c = Case::load("tiny_rms_bias");
    let a = model
        .bert
        .forward(c.tensor2("input_values"), false)
        .unwrap()
        .last_hidden_state;
    let b: Vec<f32> = back
        .bert
        .forward(c.tensor2("input_values"), false)
        .unwrap()
        .last_hidden_state
        .into_data()
        .into_vec()
        .unwrap();
    assert_eq!(max_diff(a, &b), 0.0);
}

/// `‖got − want‖₂ / ‖want‖₂`.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    (num / den).sqrt()
}

fn vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    assert_eq!(t.dtype(), burn::tensor::DType::F32, "outputs stay f32");
    t.into_data().into_vec().unwrap()
}

/// bf16 mixed precision ([`aido_model::Precision::Bf16`]) against the same fixtures (f32
/// outputs of the authors' code). The bound is GEARS-free and ours: the pooled embedding within
/// 1e-2 relative (L2), the bf16 criterion; and it must differ from the f32 run (bf16
/// really computed, not a silent f32 run).
#[test]
fn bf16_mixed_precision_tracks_the_authors_f32_outputs() {
    use aido_model::Precision;
    let bf16_runs = aido_model::attention::cpu_bf16_kernel_runs();
    for folder in ["tiny_ln_nobias", "tiny_rms_bias"] {
        let dir = testdata_path(&format!("fixtures/aido_cell/{folder}"));
        let (mut model, _) =
            aido_model::load_checkpoint::<Cpu>(&dir, LoadMode::Full, &Default::default()).unwrap();
        let c = Case::load(folder);
        let f32_out = vec(model
            .bert
            .forward(c.tensor2("input_values"), false)
            .unwrap()
            .last_hidden_state);
        model.bert.set_precision(Precision::Bf16).unwrap();
        assert_eq!(model.bert.precision(), Precision::Bf16);
        let out = model
            .bert
            .forward(c.tensor2("input_values"), false)
            .unwrap()
            .last_hidden_state;
        let present = vec![1u8; 66];
        let emb = vec(pool(out.clone(), &present, Pooling::PresentMean).unwrap());
        let e = rel_err(&emb, &c.get("cell_embedding_mean").1);
        let h = vec(out);
        let eh = rel_err(&h, &c.get("last_hidden_state").1);
        eprintln!("{folder}: bf16 relative error: pooled {e:.2e}, last_hidden_state {eh:.2e}");
        assert!(e <= 1e-2, "{folder}: bf16 pooled relative error {e}");
        assert!(
            eh <= 2e-2,
            "{folder}: bf16 last_hidden_state relative error {eh}"
        );
        assert!(
            rel_err(&h, &f32_out) > 1e-4,
            "{folder}: the bf16 run equals the f32 one"
        );
        // The weights stay f32 (master copy).
        assert_eq!(
            model.bert.encoder.layer[0].mlp.up_proj.weight.val().dtype(),
            burn::tensor::DType::F32
        );
    }
    // Full length (S = 19,266), the 3M shape, cell 0.
    let dir = testdata_path("fixtures/aido_cell/aido_cell_3m_random");
    let (mut model, _) =
        aido_model::load_checkpoint::<Cpu>(&dir, LoadMode::EncoderOnly, &Default::default())
            .unwrap();
    model.bert.set_precision(Precision::Bf16).unwrap();
    let c = Case::load("aido_cell_3m_random");
    let (g, s) = (19_264, 19_266);
    let values = PreprocessConfig::default()
        .dense_row(&c.get("counts").1[..g])
        .unwrap();
    let x = Tensor::<Cpu, 2>::from_data(TensorData::new(values, [1, s]), &Default::default());
    let out = model.bert.forward(x, false).unwrap().last_hidden_state;
    let present: Vec<u8> = c.get("pool_mask").1[..s].iter().map(|&x| x as u8).collect();
    let emb = vec(pool(out, &present, Pooling::PresentMean).unwrap());
    let e = rel_err(&emb, &c.get("cell_embedding_mean").1[..128]);
    eprintln!("3M full length: bf16 pooled relative error {e:.2e}");
    assert!(e <= 1e-2, "3M bf16 pooled relative error {e}");
    // Which attention ran: the bf16 kernels where the CPU has AVX512-BF16, else f32 kernels
    // on rounded-up inputs (reported as not run, never counted as passed).
    let ran = aido_model::attention::cpu_bf16_kernel_runs() - bf16_runs;
    if aido_kernels::KernelPath::Avx512Bf16.is_supported() {
        assert!(ran >= 6, "bf16 attention kernels ran {ran} times");
        eprintln!("bf16 attention path avx512-bf16: ran ({ran} calls)");
    } else {
        assert_eq!(ran, 0);
        eprintln!("bf16 attention path avx512-bf16: NOT RUN (this CPU lacks AVX512-BF16)");
    }
}
