//! Blocks built alone from their own configs (`LayerConfig`, `GeneEmbeddingConfig`,
//! `MlpConfig`) take a checkpoint's weights and reproduce the authors' per-layer hidden states:
//! `hidden_states_{l+1} = Layer_l(hidden_states_l)` (the last one after the final norm) and `hidden_states_0 = GeneEmbedding(values)
//! + positions`, from `testdata/fixtures/aido_cell/*/cases.safetensors` (PyTorch,
//! `output_hidden_states=True`). Tolerance 5e-5 as in the fixtures README.
#![allow(clippy::unwrap_used)]

use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::{Cpu, GeneEmbeddingConfig, LayerConfig, MlpConfig};
use aido_tokenize::shared::testdata_path;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

fn fixture(folder: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(testdata_path(&format!(
        "fixtures/aido_cell/{folder}/cases.safetensors"
    )))
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let d = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), d)
}

fn max_diff<const D: usize>(got: Tensor<Cpu, D>, want: &[f32]) -> f32 {
    let g: Vec<f32> = got.into_data().into_vec().unwrap();
    assert_eq!(g.len(), want.len());
    g.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn blocks_from_their_configs_reproduce_the_authors_layers() {
    let dev = Default::default();
    for folder in ["tiny_ln_nobias", "tiny_rms_bias"] {
        let dir = testdata_path(&format!("fixtures/aido_cell/{folder}"));
        let (model, cfg) = load_checkpoint::<Cpu>(&dir, LoadMode::EncoderOnly, &dev).unwrap();
        let bert = model.bert;
        // The value embedding, built alone.
        let emb = GeneEmbeddingConfig::new(cfg.hidden_size)
            .with_bin_num(cfg.bin_num)
            .with_bin_alpha(cfg.bin_alpha)
            .init::<Cpu>(&dev)
            .load_record(bert.gene_embedding.clone().into_record());
        let (s, v) = fixture(folder, "input_values");
        let values = Tensor::<Cpu, 2>::from_data(TensorData::new(v, [s[0], s[1]]), &dev);
        let pos = bert.position_embedding.weight.val().unsqueeze::<3>();
        let d = max_diff(
            emb.forward(values) + pos,
            &fixture(folder, "hidden_states_0").1,
        );
        assert!(d <= 5e-5, "{folder}: hidden_states_0 {d}");
        // Each block, built alone from LayerConfig, maps hidden_states_l to hidden_states_l+1.
        let layer_cfg = LayerConfig::new(
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
        )
        .with_norm(cfg.norm)
        .with_layer_norm_eps(cfg.layer_norm_eps)
        .with_bias(cfg.add_linear_bias);
        assert_eq!(
            format!("{layer_cfg:?}"),
            format!("{:?}", cfg.layer_config())
        );
        for l in 0..cfg.num_hidden_layers {
            let layer = layer_cfg
                .init::<Cpu>(&dev)
                .load_record(bert.encoder.layer[l].clone().into_record());
            let (s, h) = fixture(folder, &format!("hidden_states_{l}"));
            let h = Tensor::<Cpu, 3>::from_data(TensorData::new(h, [s[0], s[1], s[2]]), &dev);
            let want = fixture(folder, &format!("hidden_states_{}", l + 1));
            let mut got = layer.forward(h);
            if l + 1 == cfg.num_hidden_layers {
                // The last entry of the authors' `hidden_states` is after the final norm.
                got = bert.encoder.ln.forward(got);
            }
            let d = max_diff(got, &want.1);
            assert!(d <= 5e-5, "{folder}: layer {l} {d}");
        }
        // Mlp::forward on any rank: [N, H] gives the rows of [1, N, H].
        let mlp = MlpConfig::new(cfg.hidden_size, cfg.intermediate_size)
            .with_bias(cfg.add_linear_bias)
            .init::<Cpu>(&dev)
            .load_record(bert.encoder.layer[0].mlp.clone().into_record());
        let x = Tensor::<Cpu, 2>::random(
            [5, cfg.hidden_size],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let a = mlp.forward(x.clone());
        let b: Tensor<Cpu, 2> = mlp.forward(x.unsqueeze::<3>()).squeeze_dim(0);
        assert!(max_diff(a, &b.into_data().into_vec::<f32>().unwrap()) == 0.0);
    }
}

/// The value embedding's default bin count is the released models' (`bin_num` 100 in the
/// authors' `config.json` of AIDO.Cell-3M/10M/100M, and `AidoCellConfig`'s default), so a block
/// built from its own config matches a model built from the whole config.
#[test]
fn the_value_embedding_defaults_to_the_released_bin_count() {
    let whole = aido_model::AidoCellConfig::new(8, 4, 2, 2, 16);
    let block = GeneEmbeddingConfig::new(4);
    assert_eq!(block.bin_num, 100);
    assert_eq!(block.bin_num, whole.bin_num);
}
