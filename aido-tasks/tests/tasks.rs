//! aido-tasks: class weights, splits, the baselines against scikit-learn, the head, and the
//! fine-tuning loop (cache equivalence, resume).
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

use aido_model::burn::backend::Autodiff;
use aido_model::burn::module::AutodiffModule;
use aido_model::burn::optim::{GradientsParams, Optimizer};
use aido_model::burn::tensor::backend::Backend;
use aido_model::burn::tensor::{Tensor, TensorData};
use aido_model::{AidoCellConfig, Cpu};
use aido_tasks::baselines::{fit_logreg, knn_vote};
use aido_tasks::finetune::{CacheKind, argmax_rows, logits_with_cache, weighted_cross_entropy};
use aido_tasks::{
    CellTypeClassifier, CellTypeHeadConfig, ClassWeights, DataSplit, FinetuneConfig, FinetuneJob,
    TokenizedCells, finetune, split_from_values, stratified_split,
};
use aido_train::OptimConfig;
use aido_train::finetune::{Trainable, prepare};
use aido_train::optim::adamw;
use serde_json::Value;

type Ad = Autodiff<Cpu>;

fn refs() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/tasks_refs.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The formula of tools/reference/tasks_refs.py (float32 arithmetic as numpy stores it).
fn data(n: usize, d: usize, c: usize, phase: usize) -> (Vec<f32>, Vec<u32>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let k = (i * 7 + phase) % (c * (c + 1) / 2);
        let (mut cls, mut acc) = (0, 0);
        for j in 0..c {
            acc += j + 1;
            if k < acc {
                cls = j;
                break;
            }
        }
        y.push(cls as u32);
        for j in 0..d {
            let off = if j % 2 == 0 { 0.8 } else { -0.5 };
            let v = 1.5 * (0.37 * i as f64 + 1.1 * j as f64 + phase as f64).sin()
                + (cls as f64 - 1.0) * off;
            x.push(v as f32);
        }
    }
    (x, y)
}

fn names(c: usize) -> Vec<String> {
    (0..c).map(|i| format!("type{i}")).collect()
}

#[test]
fn class_weights_follow_the_formulas() {
    // counts 40/80/120/160: N_max / N_i = 4, 2, 4/3, 1
    let counts = [40, 80, 120, 160];
    let w = ClassWeights::Capped(50.0)
        .weights(&counts, &names(4))
        .unwrap();
    assert_eq!(w, vec![4.0, 2.0, 160.0 / 120.0, 1.0]);
    let w = ClassWeights::Capped(3.0)
        .weights(&counts, &names(4))
        .unwrap();
    assert_eq!(w, vec![3.0, 2.0, 160.0 / 120.0, 1.0]);
    assert_eq!(
        ClassWeights::None.weights(&counts, &names(4)).unwrap(),
        vec![1.0; 4]
    );
    // balanced = sklearn's compute_class_weight("balanced") on the same counts
    let r = refs();
    assert_eq!(r["train_counts"], serde_json::json!(counts));
    let want: Vec<f64> = serde_json::from_value(r["balanced_weights"].clone()).unwrap();
    let got = ClassWeights::Balanced.weights(&counts, &names(4)).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{got:?} vs sklearn {want:?}");
    }
    let e = ClassWeights::default()
        .weights(&[3, 0], &names(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("type1"), "{e}");
    assert_eq!(
        "capped:50".parse::<ClassWeights>().unwrap(),
        ClassWeights::Capped(50.0)
    );
    assert!("capped:0.5".parse::<ClassWeights>().is_err());
    assert!("square".parse::<ClassWeights>().is_err());
}

#[test]
fn the_split_is_stratified_seeded_and_checked() {
    // 3 classes of 50, 30, 20 cells, interleaved
    let codes: Vec<u32> = (0..100u32)
        .map(|i| {
            if i % 10 < 5 {
                0
            } else if i % 10 < 8 {
                1
            } else {
                2
            }
        })
        .collect();
    let cls = names(3);
    let a = stratified_split(&codes, &cls, 0.1, 0.2, 7).unwrap();
    let b = stratified_split(&codes, &cls, 0.1, 0.2, 7).unwrap();
    let c = stratified_split(&codes, &cls, 0.1, 0.2, 8).unwrap();
    assert_eq!(a, b, "same seed, same split");
    assert_ne!(a.test, c.test, "another seed, another split");
    let mut all: Vec<usize> = a
        .train
        .iter()
        .chain(&a.val)
        .chain(&a.test)
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>(), "disjoint and complete");
    let per = |part: &[usize], k: u32| part.iter().filter(|&&i| codes[i] == k).count();
    // round(n · fraction) of every class
    for (k, n) in [(0u32, 50usize), (1, 30), (2, 20)] {
        assert_eq!(per(&a.test, k), (n as f64 * 0.2).round() as usize);
        assert_eq!(per(&a.val, k), (n as f64 * 0.1).round() as usize);
    }
    // a class of 2 cells cannot give train, val and test a cell each
    let small: Vec<u32> = vec![0, 0, 0, 0, 0, 1, 1];
    let e = stratified_split(&small, &names(2), 0.1, 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'type1' has 2 cells") && e.contains("at least 3"),
        "{e}"
    );
    assert!(stratified_split(&codes, &cls, 0.5, 0.5, 0).is_err());
    // the user's split
    let vals: Vec<String> = ["train", "val", "test", "train", "train", "val", "test"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let codes2 = vec![0, 0, 0, 1, 1, 1, 1];
    let s = split_from_values(&vals, "split", &|i| format!("cell{i}"), &codes2, &names(2)).unwrap();
    assert_eq!(
        s,
        DataSplit {
            train: vec![0, 3, 4],
            val: vec![1, 5],
            test: vec![2, 6]
        }
    );
    // One vocabulary with `perturb fit --split COLUMN` (SplitPart's FromStr): the words GEARS
    // and scanpy users write for the validation part are accepted here too.
    let mut synonyms = vals.clone();
    synonyms[1] = "valid".into();
    synonyms[5] = "Validation".into();
    let s2 = split_from_values(
        &synonyms,
        "split",
        &|i| format!("cell{i}"),
        &codes2,
        &names(2),
    )
    .unwrap();
    assert_eq!(s2, s);
    for (word, part) in [
        ("train", aido_tasks::perturb::SplitPart::Train),
        ("val", aido_tasks::perturb::SplitPart::Val),
        ("valid", aido_tasks::perturb::SplitPart::Val),
        ("validation", aido_tasks::perturb::SplitPart::Val),
        ("test", aido_tasks::perturb::SplitPart::Test),
    ] {
        assert_eq!(word.parse::<aido_tasks::perturb::SplitPart>(), Ok(part));
    }
    let mut bad = vals.clone();
    bad[4] = "training".into();
    let e = split_from_values(&bad, "split", &|i| format!("cell{i}"), &codes2, &names(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'training'") && e.contains("cell4"), "{e}");
    let no_train1 = vec![0, 0, 0, 0, 0, 1, 1];
    let e = split_from_values(
        &vals,
        "split",
        &|i| format!("cell{i}"),
        &no_train1,
        &names(2),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("'type1' has no cell in the training part"),
        "{e}"
    );
}

#[test]
fn logistic_regression_and_knn_equal_scikit_learn() {
    let r = refs();
    let (xtr, ytr) = data(400, 6, 4, 0);
    let (xte, _) = data(120, 6, 4, 3);
    let m = fit_logreg(&xtr, &ytr, 6, 4, 1.0).unwrap();
    let coef: Vec<Vec<f64>> = serde_json::from_value(r["coef"].clone()).unwrap();
    let icpt: Vec<f64> = serde_json::from_value(r["intercept"].clone()).unwrap();
    for k in 0..4 {
        for j in 0..6 {
            let (a, b) = (m.coef[k * 6 + j], coef[k][j]);
            assert!((a - b).abs() < 1e-5, "coef[{k}][{j}] {a} vs sklearn {b}");
        }
        assert!((m.intercept[k] - icpt[k]).abs() < 1e-5, "intercept {k}");
    }
    let proba: Vec<Vec<f64>> = serde_json::from_value(r["proba_test"].clone()).unwrap();
    let p = m.predict_proba(&xte);
    for (i, row) in proba.iter().enumerate() {
        for (k, &want) in row.iter().enumerate() {
            assert!((p[i * 4 + k] - want).abs() < 1e-6, "proba[{i}][{k}]");
        }
    }
    let want: Vec<u32> = serde_json::from_value(r["logreg_pred_test"].clone()).unwrap();
    assert_eq!(m.predict(&xte), want);
    let want: Vec<u32> = serde_json::from_value(r["knn_pred_test"].clone()).unwrap();
    assert_eq!(knn_vote(&xtr, &ytr, &xte, 6, 10, 4).unwrap(), want);
}

#[test]
fn weighted_cross_entropy_is_pytorchs_weighted_mean() {
    let dev = Default::default();
    let logits = Tensor::<Cpu, 2>::from_data(
        TensorData::new(vec![2.0f32, 0.0, 0.0, 1.0, -1.0, 0.5], [3, 2]),
        &dev,
    );
    let w = [1.0, 3.0];
    let l: f32 = weighted_cross_entropy(logits, &[0, 1, 1], &w).into_scalar();
    // by hand: nll_i = logsumexp(z_i) − z_{i,y_i}
    let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
    let n = [
        lse(2.0, 0.0) - 2.0,
        lse(0.0, 1.0) - 1.0,
        lse(-1.0, 0.5) - 0.5,
    ];
    let want = (1.0 * n[0] + 3.0 * n[1] + 3.0 * n[2]) / 7.0;
    assert!((f64::from(l) - want).abs() < 1e-6, "{l} vs {want}");
}

#[test]
fn the_head_separates_separable_embeddings() {
    let dev = Default::default();
    Ad::seed(&dev, 1);
    // 4 classes, 32-dim embeddings: class k is a shifted bump on coordinates 8k..8k+8
    let (n, h, c) = (200usize, 32usize, 4usize);
    let mut x = vec![0.0f32; n * h];
    let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    for i in 0..n {
        for j in 0..h {
            let noise = ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5;
            x[i * h + j] = noise + if j / 8 == y[i] as usize { 2.0 } else { 0.0 };
        }
    }
    let mut head = CellTypeHeadConfig::new(h, c)
        .with_hidden(16)
        .with_batch_norm(true)
        .init::<Ad>(&dev);
    let mut opt = adamw::<Ad, _>(&OptimConfig {
        beta2: 0.999,
        ..OptimConfig::default()
    });
    let w = vec![1.0; c];
    for step in 0..60 {
        let rows: Vec<usize> = (0..n).filter(|i| i % 3 == step % 3).collect();
        let xb: Vec<f32> = rows
            .iter()
            .flat_map(|&i| x[i * h..(i + 1) * h].iter().copied())
            .collect();
        let yb: Vec<u32> = rows.iter().map(|&i| y[i]).collect();
        let xt = Tensor::<Ad, 2>::from_data(TensorData::new(xb, [rows.len(), h]), &dev);
        let loss = weighted_cross_entropy(head.forward(xt), &yb, &w);
        let g = GradientsParams::from_grads(loss.backward(), &head);
        head = opt.step(1e-2, head, g);
    }
    let valid = head.valid();
    let xt = Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [n, h]), &dev);
    let v: Vec<f32> = valid.forward(xt).into_data().into_vec().unwrap();
    let pred = argmax_rows(&v, c);
    let t: Vec<String> = y.iter().map(|k| k.to_string()).collect();
    let p: Vec<String> = pred.iter().map(|k| k.to_string()).collect();
    let f1 = aido_eval::metrics::classify::macro_f1(&t, &p).unwrap();
    assert_eq!(f1, 1.0);
}

// ---- the loop on a tiny encoder ----

fn tiny() -> AidoCellConfig {
    AidoCellConfig::new(24, 16, 3, 2, 32)
}

/// 60 cells of 3 types; type k expresses genes 8k..8k+8 highly.
fn cells() -> (TokenizedCells, Vec<u8>, Vec<u32>) {
    let s = tiny().seq_len();
    let mut t = TokenizedCells::new(s);
    let mut codes = Vec::new();
    for i in 0..60usize {
        let k = i % 3;
        let row: Vec<f32> = (0..s)
            .map(|p| {
                if p >= 24 {
                    4.0
                } else if p / 8 == k {
                    3.0 + ((i + p) % 5) as f32 * 0.2
                } else {
                    ((i * 7 + p) % 3) as f32 * 0.3
                }
            })
            .collect();
        t.push(&row, i);
        codes.push(k as u32);
    }
    (t, vec![1u8; s], codes)
}

fn config(trainable: &str, epochs: usize) -> FinetuneConfig {
    FinetuneConfig {
        trainable: trainable.into(),
        pooling: "max".into(),
        head_hidden: 16,
        dropout: 0.1,
        batch_norm: true,
        class_weights: ClassWeights::default(),
        epochs,
        batch_size: 8,
        lr: 3e-3,
        patience: 0,
        seed: 3,
        cache: true,
    }
}

fn model(trainable: &str) -> CellTypeClassifier<Ad> {
    let dev = Default::default();
    Ad::seed(&dev, 11);
    let enc = tiny().init::<Ad>(false, &dev).bert;
    let bert = prepare(enc, &trainable.parse::<Trainable>().unwrap(), &dev).unwrap();
    let head = CellTypeHeadConfig::new(16, 3)
        .with_hidden(16)
        .with_dropout(0.1)
        .with_batch_norm(true)
        .init::<Ad>(&dev);
    CellTypeClassifier { bert, head }
}

#[test]
fn cached_prefix_gives_the_logits_of_recomputation_bit_for_bit() {
    let (data, present, codes) = cells();
    let cls = names(3);
    let split = stratified_split(&codes, &cls, 0.2, 0.2, 0).unwrap();
    let cfg = config("last:1", 1);
    let dir = tempfile::tempdir().unwrap();
    let job = FinetuneJob {
        out: dir.path(),
        data: &data,
        present: &present,
        codes: &codes,
        classes: &cls,
        split: &split,
        config: &cfg,
        resume: false,
        cache_limit: u64::MAX,
    };
    let m = model("last:1").valid();
    let dev = Default::default();
    // a batch mixing training and validation cells, in another order than the cache's
    let rows: Vec<usize> = split
        .val
        .iter()
        .rev()
        .chain(split.train.iter().take(5))
        .copied()
        .collect();
    for kind in [
        CacheKind::Hidden { start: 2 },
        CacheKind::Hidden { start: 0 },
        CacheKind::Pooled,
    ] {
        let recomputed = logits_with_cache(&m, CacheKind::None, kind, &job, &rows, &dev).unwrap();
        let cached = logits_with_cache(&m, kind, kind, &job, &rows, &dev).unwrap();
        assert_eq!(cached, recomputed, "{kind:?}");
    }
    // and the whole encoder run on the batch agrees to rounding
    let full = logits_with_cache(&m, CacheKind::None, CacheKind::None, &job, &rows, &dev).unwrap();
    let h2 = CacheKind::Hidden { start: 2 };
    let cached = logits_with_cache(&m, h2, h2, &job, &rows, &dev).unwrap();
    for (a, b) in full.iter().zip(&cached) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn the_loop_learns_resumes_exactly_and_the_cache_changes_nothing() {
    let (data, present, codes) = cells();
    let cls = names(3);
    let split = stratified_split(&codes, &cls, 0.2, 0.2, 0).unwrap();
    let dev = Default::default();
    let run = |cfg: &FinetuneConfig, out: &std::path::Path, resume: bool| {
        let job = FinetuneJob {
            out,
            data: &data,
            present: &present,
            codes: &codes,
            classes: &cls,
            split: &split,
            config: cfg,
            resume,
            cache_limit: u64::MAX,
        };
        finetune::<Ad>(&job, model(&cfg.trainable), &dev, &mut |_| {}).unwrap()
    };
    let a = tempfile::tempdir().unwrap();
    let whole = run(&config("last:1", 4), a.path(), false);
    assert_eq!(whole.cache, CacheKind::Hidden { start: 2 });
    assert_eq!(whole.history.len(), 4);
    assert!(
        whole.history.last().unwrap().train_loss < whole.history[0].train_loss,
        "{:?}",
        whole.history
    );
    // no cache: the same numbers
    let b = tempfile::tempdir().unwrap();
    let mut nc = config("last:1", 4);
    nc.cache = false;
    let plain = run(&nc, b.path(), false);
    assert_eq!(plain.cache, CacheKind::None);
    for (x, y) in whole.history.iter().zip(&plain.history) {
        assert_eq!(
            (x.train_loss, x.val_macro_f1),
            (y.train_loss, y.val_macro_f1)
        );
    }
    // 2 epochs, then resumed to 4: the history of the uninterrupted run
    let c = tempfile::tempdir().unwrap();
    run(&config("last:1", 2), c.path(), false);
    let err = {
        let job_cfg = config("last:1", 4);
        let mut other = job_cfg.clone();
        other.lr = 1e-2;
        let job = FinetuneJob {
            out: c.path(),
            data: &data,
            present: &present,
            codes: &codes,
            classes: &cls,
            split: &split,
            config: &other,
            resume: true,
            cache_limit: u64::MAX,
        };
        finetune::<Ad>(&job, model("last:1"), &dev, &mut |_| {})
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err.contains("other settings"), "{err}");
    // resumed with the epochs extended to 4: the history of the uninterrupted run
    let again = run(&config("last:1", 4), c.path(), true);
    assert_eq!(again.history.len(), 4);
    for (x, y) in whole.history.iter().zip(&again.history) {
        // The saved epochs come back through the checkpoint's JSON, which serde_json parses to
        // within 1 ulp without its `float_roundtrip` feature (seen on an AVX2-only EPYC:
        // ...435 vs ...436): the losses agree to 4 ulps, the rest exactly.
        assert!(
            (x.train_loss - y.train_loss).abs() <= 4.0 * f64::EPSILON * x.train_loss.abs(),
            "{} vs {}",
            x.train_loss,
            y.train_loss
        );
        assert_eq!(
            (x.val_macro_f1, x.val_accuracy),
            (y.val_macro_f1, y.val_accuracy)
        );
    }
    assert_eq!(again.best_epoch, whole.best_epoch);
    // the selected models are the same, batch-norm running statistics included
    let probe = |m: &CellTypeClassifier<Cpu>| {
        let job = FinetuneJob {
            out: c.path(),
            data: &data,
            present: &present,
            codes: &codes,
            classes: &cls,
            split: &split,
            config: &config("last:1", 4),
            resume: false,
            cache_limit: u64::MAX,
        };
        logits_with_cache(m, CacheKind::None, CacheKind::None, &job, &split.test, &dev).unwrap()
    };
    assert_eq!(probe(&again.best), probe(&whole.best));
    // frozen: a linear probe on cached pooled embeddings
    let d = tempfile::tempdir().unwrap();
    let frozen = run(&config("frozen", 3), d.path(), false);
    assert_eq!(frozen.cache, CacheKind::Pooled);
    assert!(frozen.history.iter().all(|r| r.val_macro_f1.is_finite()));
}
