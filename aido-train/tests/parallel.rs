//! Data parallelism through burn's collective all-reduce: two peers (threads) on the CPU
//! backend (burn-flex has one device, so both peers use it; on GPUs each peer gets its own).
//! Expectation: the replicas stay identical, and the update equals the single-device update
//! with gradient accumulation over the same micro-batches, up to float summation order — for
//! one-off updates and for persistent replicas kept across updates.
#![cfg(feature = "collective")]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use aido_model::burn::backend::Autodiff;
use aido_model::burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use aido_model::burn::tensor::backend::Backend;
use aido_model::{AidoCell, AidoCellConfig, Cpu};
use aido_rda::{RdaBatch, RdaConfig, masked_mse};
use aido_tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};
use aido_train::optim::{adamw, clip_global_norm};
use aido_train::parallel::{Replicas, data_parallel_update_all, materialize};
use aido_train::{CellCorpus, DataSet, OptimConfig};

type B = Autodiff<Cpu>;
const G: usize = 60;

fn corpus() -> CellCorpus {
    let sim = simulate(&SimulationConfig::new(64, 3, 1), synthetic_gene_names(G)).unwrap();
    let c = &sim.counts;
    let cells = (0..c.n_cells())
        .map(|i| {
            let (idx, val) = c.row(i);
            idx.iter().copied().zip(val.iter().copied()).collect()
        })
        .collect();
    CellCorpus::from_sets(
        G,
        vec![DataSet {
            path: PathBuf::from("simulated"),
            present: vec![1; G + 2],
            source_cells: (0..c.n_cells()).collect(),
            cells,
            report: None,
            skipped_empty: 0,
        }],
    )
    .unwrap()
}

/// Four micro-batches of 4 cells for update `u`.
fn micro(c: &CellCorpus, u: usize) -> Vec<RdaBatch> {
    let s = c.samplers(RdaConfig::default(), 7).unwrap();
    (0..4)
        .map(|k| {
            let cells: Vec<(usize, u64)> = (0..4)
                .map(|j| ((u * 16 + k * 4 + j) % c.len(), u as u64))
                .collect();
            s.batch(c, &cells).unwrap()
        })
        .collect()
}

fn flat(m: &AidoCell<B>) -> Vec<f32> {
    let l = &m.bert.encoder.layer[1];
    let mut v = l
        .attention
        .self_attn
        .key
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    v.extend(
        m.bert
            .position_embedding
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
    );
    v
}

#[test]
fn two_peers_match_single_device_accumulation() {
    let c = corpus();
    let dev = Default::default();
    <B as Backend>::seed(&dev, 3);
    let m0 = AidoCellConfig::new(G, 16, 2, 2, 40).init::<B>(true, &dev);
    materialize::<B, _>(&m0);
    let o = OptimConfig::default();

    // Single device: accumulate the four micro-batches, clip, step.
    let (mut single, mut so) = (m0.clone(), adamw::<B, AidoCell<B>>(&o));
    let mut single_losses = Vec::new();
    for u in 0..3 {
        let mb = micro(&c, u);
        let total: usize = mb.iter().map(|b| b.n_masked).sum();
        let mut acc = GradientsAccumulator::<AidoCell<B>>::new();
        let mut l = 0.0;
        for b in &mb {
            let (x, t, w) = b.tensors::<B>(&dev);
            let pred = single
                .head(single.bert.forward(x, false).unwrap().last_hidden_state)
                .unwrap();
            let loss = masked_mse(pred, t, w, total);
            l += f64::from(loss.clone().into_scalar());
            acc.accumulate::<B>(
                &single,
                GradientsParams::from_grads(loss.backward(), &single),
            );
        }
        let mut g = acc.grads();
        clip_global_norm::<B, _>(&single, &mut g, 1.0);
        single = so.step(1e-3, single, g);
        single_losses.push(l);
    }

    // Two peers through burn's collective.
    let (mut par, mut po) = (m0.clone(), adamw::<B, AidoCell<B>>(&o));
    for (u, want_loss) in single_losses.iter().enumerate() {
        let mb = micro(&c, u);
        let peers = data_parallel_update_all(par, po, &mb, 1e-3, 1.0, &[dev, dev]).unwrap();
        assert_eq!(peers.len(), 2);
        // Replicas identical, bit for bit, and they agree on the loss.
        assert_eq!(flat(&peers[0].0), flat(&peers[1].0));
        assert_eq!(peers[0].2, peers[1].2);
        let got = peers[0].2.loss;
        assert!(
            (got - want_loss).abs() <= 1e-5 * want_loss,
            "update {u}: {got} vs {want_loss}"
        );
        let (m, opt, _) = peers.into_iter().next().unwrap();
        par = m;
        po = opt;
    }
    let (a, b) = (flat(&single), flat(&par));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "max |Δw| = {worst}");

    // Persistent replicas (made once, three updates): the same losses, replicas identical.
    let mut reps = Replicas::new(&m0, &adamw::<B, AidoCell<B>>(&o), &[dev, dev]).unwrap();
    for (u, want_loss) in single_losses.iter().enumerate() {
        let stats = reps.update_all(micro(&c, u), 1e-3, 1.0).unwrap();
        assert_eq!(stats[0], stats[1]);
        assert!(
            (stats[0].loss - want_loss).abs() <= 1e-5 * want_loss,
            "persistent, update {u}: {} vs {want_loss}",
            stats[0].loss
        );
    }
    let snaps = reps.snapshot_all().unwrap();
    assert_eq!(flat(&snaps[0].0), flat(&snaps[1].0));
    let worst = flat(&single)
        .iter()
        .zip(&flat(&snaps[0].0))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "persistent: max |Δw| = {worst}");
    let err = reps
        .update_all(micro(&c, 0)[..1].to_vec(), 1e-3, 1.0)
        .unwrap_err();
    assert!(
        err.to_string().contains("at least 2 micro-batches"),
        "{err}"
    );
    drop(reps);

    // Too few micro-batches for the peers is a clear error.
    let err = data_parallel_update_all(par, po, &micro(&c, 0)[..1], 1e-3, 1.0, &[dev, dev])
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("at least 2 micro-batches"),
        "{err}"
    );
}
