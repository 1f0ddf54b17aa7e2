//! Fine-tuning machinery: what trains and what does not, LoRA merging, parameter groups and
//! global-norm clipping, checked against definitions (not against the code's own output).
#![allow(clippy::unwrap_used)]

use aido_model::burn::backend::Autodiff;
use aido_model::burn::module::Module;
use aido_model::burn::optim::{GradientsParams, Optimizer};
use aido_model::burn::tensor::backend::Backend;
use aido_model::burn::tensor::{Distribution, Tensor};
use aido_model::load::{LoadMode, load_checkpoint};
use aido_model::lora::{self, LoraConfig};
use aido_model::{AidoCell, AidoCellConfig, Cpu, save_checkpoint};
use aido_train::OptimConfig;
use aido_train::finetune::{BestRecord, BestTracker, Observation, Trainable, prepare, save_best};
use aido_train::optim::{GroupedAdamW, adamw, clip_global_norm, global_grad_norm, param_ids};

type B = Autodiff<Cpu>;

fn cfg() -> AidoCellConfig {
    AidoCellConfig::new(24, 16, 2, 2, 40)
}

fn model(seed: u64) -> AidoCell<B> {
    let d = Default::default();
    <B as Backend>::seed(&d, seed);
    cfg().init::<B>(true, &d)
}

fn input() -> Tensor<B, 2> {
    let d = Default::default();
    <B as Backend>::seed(&d, 99);
    let x: Tensor<B, 2> = Tensor::random([3, 26], Distribution::Uniform(0.0, 3.0), &d);
    x
}

/// Sum of squares of the head output minus a fixed target: a loss that touches every parameter.
fn loss(m: &AidoCell<B>) -> Tensor<B, 1> {
    let h = m.bert.forward(input(), false).unwrap().last_hidden_state;
    let y = m.head(h).unwrap();
    let t = Tensor::<B, 3>::ones([3, 26, 1], &Default::default());
    let d = y - t;
    (d.clone() * d).mean()
}

fn flat<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn train(mut m: AidoCell<B>, steps: usize) -> AidoCell<B> {
    let mut o = adamw::<B, AidoCell<B>>(&OptimConfig::default());
    for _ in 0..steps {
        let g = GradientsParams::from_grads(loss(&m).backward(), &m);
        m = o.step(1e-2, m, g);
    }
    m
}

fn q0(m: &AidoCell<B>) -> Vec<f32> {
    flat(
        m.bert.encoder.layer[0]
            .attention
            .self_attn
            .query
            .weight
            .val(),
    )
}
fn q1(m: &AidoCell<B>) -> Vec<f32> {
    flat(
        m.bert.encoder.layer[1]
            .attention
            .self_attn
            .query
            .weight
            .val(),
    )
}
fn head(m: &AidoCell<B>) -> Vec<f32> {
    flat(m.cls.as_ref().unwrap().predictions.decoder.weight.val())
}
fn pos(m: &AidoCell<B>) -> Vec<f32> {
    flat(m.bert.position_embedding.weight.val())
}

#[test]
fn frozen_backbone_trains_only_the_head() {
    let base = model(1);
    let (b_q, b_h) = (q0(&base), head(&base));
    let mut m = base;
    m.bert = prepare(m.bert, &Trainable::Frozen, &Default::default()).unwrap();
    let m = train(m, 3);
    assert_eq!(q0(&m), b_q, "a frozen block changed");
    assert_ne!(head(&m), b_h, "the head did not train");
}

#[test]
fn last_k_blocks_train_the_last_blocks_only() {
    let base = model(2);
    let (b_q0, b_q1, b_pos) = (q0(&base), q1(&base), pos(&base));
    let mut m = base;
    m.bert = prepare(m.bert, &Trainable::LastBlocks(1), &Default::default()).unwrap();
    let m = train(m, 3);
    assert_eq!(q0(&m), b_q0);
    assert_eq!(pos(&m), b_pos);
    assert_ne!(q1(&m), b_q1);
    let err = prepare(
        model(2).bert,
        &Trainable::LastBlocks(3),
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("2 blocks"), "{err}");
}

#[test]
fn lora_starts_at_the_base_model_trains_only_adapters_and_merges_exactly() {
    let base = model(3);
    let want0 = flat(loss(&base));
    let b_q = q0(&base);
    let mut m = base;
    let cfg = LoraConfig::new().with_rank(4).with_alpha(8.0);
    m.bert = prepare(m.bert, &Trainable::Lora(cfg), &Default::default()).unwrap();
    // B = 0 at the start: the adapted model is the base model.
    assert_eq!(flat(loss(&m)), want0);
    let mut m = train(m, 5);
    // Base weights untouched, adapters moved.
    assert_eq!(q0(&m), b_q);
    let ad = m.bert.encoder.layer[0].attention.lora.as_ref().unwrap();
    assert!(flat(ad.query.b.val()).iter().any(|&v| v != 0.0));
    let adapted = flat(loss(&m));
    // A checkpoint cannot silently drop the adapters...
    let dir = tempfile::tempdir().unwrap();
    let e = save_checkpoint(&m, &cfg_for_save(), dir.path()).unwrap_err();
    assert!(e.to_string().contains("merge"), "{e}");
    // ...merged, the model computes the same function with plain weights: W + (α/r)·A·B.
    let delta = flat(ad.query.a.val().matmul(ad.query.b.val()).mul_scalar(2.0));
    m.bert = lora::merge(m.bert);
    assert!(!lora::has_adapters(&m.bert));
    let merged_q: Vec<f32> = q0(&m);
    for ((w, d), g) in b_q.iter().zip(&delta).zip(&merged_q) {
        assert!((w + d - g).abs() < 1e-6);
    }
    let merged = flat(loss(&m));
    assert!(
        (merged[0] - adapted[0]).abs() <= 1e-5 * adapted[0].abs().max(1.0),
        "{merged:?} vs {adapted:?}"
    );
    save_checkpoint(&m, &cfg_for_save(), dir.path()).unwrap();
}

#[test]
fn the_best_checkpoint_of_a_lora_run_loads_as_a_plain_model_with_the_same_outputs() {
    let mut m = model(7);
    let cfg = LoraConfig::new().with_rank(4).with_alpha(8.0);
    m.bert = prepare(m.bert, &Trainable::Lora(cfg), &Default::default()).unwrap();
    let m = train(m, 4);
    let adapted = flat(loss(&m));
    let dir = tempfile::tempdir().unwrap();
    let best = dir.path().join("best");
    let rec = BestRecord {
        step: 4,
        metric: "val_loss",
        value: f64::from(adapted[0]),
    };
    save_best(&best, &m, &cfg_for_save(), &rec).unwrap();
    // A second, later best replaces the first.
    save_best(&best, &m, &cfg_for_save(), &BestRecord { step: 5, ..rec }).unwrap();
    let (loaded, _) = load_checkpoint::<B>(&best, LoadMode::Full, &Default::default()).unwrap();
    let got = flat(loss(&loaded));
    assert!((got[0] - adapted[0]).abs() <= 1e-5 * adapted[0].abs().max(1.0));
    let json = std::fs::read_to_string(best.join("best.json")).unwrap();
    assert!(json.contains("\"step\": 5"), "{json}");
    assert!(!dir.path().join("best.partial").exists() && !dir.path().join("best.old").exists());
}

fn cfg_for_save() -> AidoCellConfig {
    cfg()
}

#[test]
fn grouped_adamw_matches_adamw_and_scales_per_group() {
    // One group holding everything = plain AdamW, bit for bit.
    let o = OptimConfig::default();
    let m0 = model(4);
    // Materialize the lazily initialized parameters, so that both copies hold the same values.
    let _ = loss(&m0);
    let mut plain = adamw::<B, AidoCell<B>>(&o);
    let mut grouped = GroupedAdamW::<B, AidoCell<B>>::new().group("all", param_ids(&m0), 1.0, &o);
    let (mut a, mut b) = (m0.clone(), m0.fork(&Default::default()));
    for _ in 0..3 {
        let ga = GradientsParams::from_grads(loss(&a).backward(), &a);
        a = plain.step(1e-2, a, ga);
        let gb = GradientsParams::from_grads(loss(&b).backward(), &b);
        b = grouped.step(1e-2, b, gb);
    }
    assert_eq!(q0(&a), q0(&b));
    assert_eq!(head(&a), head(&b));

    // A head group at multiplier 0 stays put while the backbone group trains; the optimizer
    // record round-trips through the group split.
    let m0 = model(5);
    let h0 = head(&m0);
    let q = q0(&m0);
    let mut g = GroupedAdamW::<B, AidoCell<B>>::new()
        .group("backbone", param_ids(&m0.bert), 1.0, &o)
        .group("head", param_ids(m0.cls.as_ref().unwrap()), 0.0, &o);
    let mut m = m0;
    for _ in 0..2 {
        let gr = GradientsParams::from_grads(loss(&m).backward(), &m);
        m = g.step(1e-2, m, gr);
    }
    assert_eq!(head(&m), h0);
    assert_ne!(q0(&m), q);
    let rec = g.to_record();
    let n = rec.len();
    let g2 = GroupedAdamW::<B, AidoCell<B>>::new()
        .group("backbone", param_ids(&m.bert), 1.0, &o)
        .group("head", param_ids(m.cls.as_ref().unwrap()), 0.0, &o)
        .load_record(rec);
    assert_eq!(g2.to_record().len(), n);
}

#[test]
fn global_norm_clipping_follows_the_pytorch_rule() {
    // torch.nn.utils.clip_grad_norm_: total = ‖concat(all grads)‖₂; if total > max, every
    // gradient is multiplied by max / (total + 1e-6).
    let m = model(6);
    let mut g = GradientsParams::from_grads(loss(&m).backward(), &m);
    let before = host_grads(&m, &g);
    let total: f64 = before
        .iter()
        .flatten()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt();
    let reported = global_grad_norm::<B, _>(&m, &g);
    assert!(
        (reported - total).abs() <= 1e-4 * total,
        "{reported} vs {total}"
    );
    let max = total / 3.0;
    clip_global_norm::<B, _>(&m, &mut g, max);
    let after = host_grads(&m, &g);
    let factor = max / (total + 1e-6);
    for (b, a) in before.iter().flatten().zip(after.iter().flatten()) {
        assert!((f64::from(*b) * factor - f64::from(*a)).abs() <= 1e-6 + 1e-5 * f64::from(b.abs()));
    }
    // Below the threshold nothing changes.
    // (Compared with the same gradients before the call: two backward passes need not agree
    // bit for bit, their reductions are threaded.)
    let mut g2 = GradientsParams::from_grads(loss(&m).backward(), &m);
    let unclipped = host_grads(&m, &g2);
    clip_global_norm::<B, _>(&m, &mut g2, total * 2.0);
    assert_eq!(host_grads(&m, &g2), unclipped);
}

fn host_grads(m: &AidoCell<B>, g: &GradientsParams) -> Vec<Vec<f32>> {
    use aido_model::burn::module::{ModuleVisitor, Param};
    struct V<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl ModuleVisitor<B> for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if let Some(t) = self.0.get::<Cpu, D>(p.id) {
                self.1
                    .push(t.into_data().convert::<f32>().to_vec::<f32>().unwrap());
            }
        }
    }
    let mut v = V(g, Vec::new());
    m.visit(&mut v);
    assert!(!v.1.is_empty());
    v.1
}

#[test]
fn best_tracker_keeps_the_best_and_stops_after_patience() {
    let mut t = BestTracker::new(true, Some(2));
    assert_eq!(t.observe(1, 0.5), Observation::Improved);
    assert_eq!(t.observe(2, 0.7), Observation::Improved);
    assert_eq!(t.observe(3, f64::NAN), Observation::NotImproved);
    assert_eq!(t.observe(4, 0.6), Observation::Stop);
    assert_eq!(t.best(), Some((2, 0.7)));
    let mut l = BestTracker::new(false, None);
    l.observe(1, 2.0);
    assert_eq!(l.observe(2, 1.0), Observation::Improved);
    assert_eq!(l.observe(3, 1.5), Observation::NotImproved);
    assert_eq!(l.best(), Some((2, 1.0)));
}

#[test]
fn trainable_parts_parse_from_text() {
    assert_eq!(
        "lora:8".parse::<Trainable>().unwrap(),
        Trainable::Lora(LoraConfig::new().with_rank(8).with_alpha(16.0))
    );
    assert_eq!(
        "last:2".parse::<Trainable>().unwrap(),
        Trainable::LastBlocks(2)
    );
    assert!("lora:x".parse::<Trainable>().is_err());
}
