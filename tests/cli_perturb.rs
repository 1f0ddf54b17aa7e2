//! `aido simulate --perturbations`, `aido perturb fit` / `predict` and `aido insilico` through
//! the binary on a small simulated screen: the exact output forms of the issue, the backbone
//! route with a random-weight encoder, clear errors, and in-silico knockouts (an unexpressed
//! gene's shift is exactly 0; batching the perturbed copies changes nothing).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aido::model::burn::tensor::backend::Backend;
use aido::model::{AidoCellConfig, Cpu, save_checkpoint};
use aido::tokenize::{ReadOptions, open_source, read_all};
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aido"))
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[track_caller]
fn fails_with(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected a failure");
    let e = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(e.contains(n), "error lacks '{n}': {e}");
    }
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small screen: 60 genes (2 programs of 25), 8 perturbed genes, 6 doubles.
fn screen(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (x, panel, ctrl) = (
        dir.join("screen.h5ad"),
        dir.join("panel.tsv"),
        dir.join("controls.h5ad"),
    );
    ok(&run(&[
        "simulate",
        "--perturbations",
        "8",
        "--genes",
        "60",
        "--programs",
        "2",
        "--doubles",
        "6",
        "--control-cells",
        "60",
        "--cells-per-condition",
        "6",
        "--seed",
        "5",
        "--output",
        s(&x),
        "--panel-out",
        s(&panel),
        "--controls-out",
        s(&ctrl),
    ]));
    (x, panel, ctrl)
}

/// A random 2-block encoder (H 16) over the panel, with its genes.tsv.
fn random_model(dir: &Path, panel: &Path) -> PathBuf {
    let n = std::fs::read_to_string(panel).unwrap().lines().count() - 1;
    let m = dir.join("encoder");
    let cfg = AidoCellConfig::new(n, 16, 2, 2, 32);
    let dev = Default::default();
    Cpu::seed(&dev, 3);
    save_checkpoint(&cfg.init::<Cpu>(false, &dev), &cfg, &m).unwrap();
    std::fs::copy(panel, m.join("genes.tsv")).unwrap();
    m
}

const GROUPS: [&str; 5] = [
    "seen_single",
    "unseen_single",
    "combo_seen0",
    "combo_seen1",
    "combo_seen2",
];

#[test]
fn perturb_fit_and_predict_write_the_documented_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (x, panel, _) = screen(dir.path());
    let out = dir.path().join("fit");
    ok(&run(&[
        "perturb",
        "fit",
        "--input",
        s(&x),
        "--out",
        s(&out),
        "--no-backbone",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--pool",
        "20",
    ]));
    let p = json(&out.join("predictions.json"));
    let genes = p["genes"].as_array().unwrap();
    assert_eq!(genes.len(), 60);
    let conds = p["conditions"].as_object().unwrap();
    assert_eq!(conds.len(), 1 + 8 + 6, "every condition of the file");
    for (name, c) in conds {
        assert!(
            ["train", "val", "test"].contains(&c["split"].as_str().unwrap()),
            "{name}"
        );
        assert!(GROUPS.contains(&c["group"].as_str().unwrap()), "{name}");
        let v = c["predicted"].as_array().unwrap();
        assert_eq!(v.len(), 60);
        assert!(v.iter().all(|x| x.as_f64().unwrap().is_finite()));
    }
    let r = json(&out.join("report.json"));
    let groups = r["groups"].as_object().unwrap();
    assert!(!groups.is_empty());
    for (g, per) in groups {
        assert!(GROUPS.contains(&g.as_str()));
        for name in [
            "model",
            "no_change",
            "mean_delta",
            "linear",
            "matching_mean",
        ] {
            let v = &per[name];
            assert!(v["mse_top20_de"].as_f64().unwrap() >= 0.0, "{g}/{name}");
            assert!(v["l2_top1000"].as_f64().unwrap() >= 0.0, "{g}/{name}");
            for k in [
                "pearson_delta",
                "pearson_delta_top1000",
                "pearson_delta_centroid",
                "pearson_delta_centroid_top20_de",
            ] {
                assert!(v[k].as_f64().unwrap().abs() <= 1.0 + 1e-9, "{g}/{name}/{k}");
            }
            assert!((0.0..=1.0).contains(&v["centroid_accuracy"].as_f64().unwrap()));
            for k in ["overlap_at_N", "discrimination_score_l1"] {
                assert!(
                    (0.0..=1.0).contains(&v[k].as_f64().unwrap()),
                    "{g}/{name}/{k}"
                );
            }
            assert!(v["mae"].as_f64().unwrap() >= 0.0, "{g}/{name}/mae");
            assert!(v["n_conditions"].as_u64().unwrap() >= 1);
        }
        assert!(per.get("linear_external").is_none());
    }
    // Per test condition: its group and every predictor's metrics; the group values are their
    // means (recomputed here from the written numbers).
    let per_condition = r["per_condition"].as_object().unwrap();
    let tests: Vec<&String> = conds
        .iter()
        .filter(|(_, c)| c["split"] == "test")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(per_condition.len(), tests.len(), "every test condition");
    for n in &tests {
        let pc = &per_condition[n.as_str()];
        assert_eq!(pc["group"], conds[n.as_str()]["group"], "{n}");
        assert!(pc["scores"]["model"]["mse_top20_de"].as_f64().unwrap() >= 0.0);
        assert!(pc["scores"]["model"].get("n_conditions").is_none());
    }
    for (g, per) in groups {
        for (name, v) in per.as_object().unwrap() {
            let members: Vec<&Value> = per_condition
                .values()
                .filter(|c| c["group"] == g.as_str() && c["scores"].get(name).is_some())
                .map(|c| &c["scores"][name])
                .collect();
            assert_eq!(members.len() as u64, v["n_conditions"].as_u64().unwrap());
            for k in [
                "mse_top20_de",
                "pearson_delta_centroid",
                "centroid_accuracy",
                "mae",
            ] {
                let mean = members.iter().map(|m| m[k].as_f64().unwrap()).sum::<f64>()
                    / members.len() as f64;
                assert!(
                    (mean - v[k].as_f64().unwrap()).abs() < 1e-9,
                    "{g}/{name}/{k}"
                );
            }
        }
    }
    assert_eq!(r["settings"]["linear"]["k"], 10);
    assert_eq!(r["settings"]["fit"]["lr_decay"], 0.5);
    assert_eq!(r["settings"]["split"], "simulation");
    assert_eq!(r["settings"]["gene_embeddings"], "learned");
    // Predict a combination the file does not hold, and a single.
    let gene = |i: usize| genes[i].as_str().unwrap().to_string();
    let singles: Vec<String> = conds
        .keys()
        .filter(|k| k.ends_with("+ctrl"))
        .map(|k| k.trim_end_matches("+ctrl").to_string())
        .collect();
    let mut new_pair = None;
    'o: for a in &singles {
        for b in &singles {
            let n = format!("{a}+{b}");
            if a < b && !conds.contains_key(&n) && !conds.contains_key(&format!("{b}+{a}")) {
                new_pair = Some(n);
                break 'o;
            }
        }
    }
    let new_pair = new_pair.unwrap();
    let list = format!("{new_pair},{}+ctrl", singles[0]);
    let pred = dir.path().join("pred.json");
    ok(&run(&[
        "perturb",
        "predict",
        "--model",
        s(&out.join("model")),
        "--conditions",
        &list,
        "--output",
        s(&pred),
    ]));
    let q = json(&pred);
    assert_eq!(q["genes"].as_array().unwrap().len(), 60);
    let qc = q["conditions"].as_object().unwrap();
    assert_eq!(qc.len(), 2);
    assert!(GROUPS.contains(&qc[&new_pair]["group"].as_str().unwrap()));
    // The single predicted again equals predictions.json (same pool, same batching).
    let again = qc[&format!("{}+ctrl", singles[0])]["predicted"]
        .as_array()
        .unwrap();
    let first = conds[&format!("{}+ctrl", singles[0])]["predicted"]
        .as_array()
        .unwrap();
    for (a, b) in again.iter().zip(first) {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5);
    }
    // Bad conditions name the gene.
    let o = run(&[
        "perturb",
        "predict",
        "--model",
        s(&out.join("model")),
        "--conditions",
        &format!("{}+NOPE", gene(0)),
        "--output",
        s(&dir.path().join("bad.json")),
    ]);
    fails_with(&o, &["NOPE", "not one of the model's 60 genes"]);
    assert!(!dir.path().join("bad.json").exists());
    // --format cell-eval: predicted single cells of every condition of the screen, in the layout
    // cell-eval takes; `perturb score` reads them back against the screen's real cells.
    let all: Vec<String> = conds.keys().filter(|k| *k != "ctrl").cloned().collect();
    let cells = dir.path().join("cells.h5ad");
    ok(&run(&[
        "perturb",
        "predict",
        "--model",
        s(&out.join("model")),
        "--conditions",
        &all.join(","),
        "--format",
        "cell-eval",
        "--cells",
        "7",
        "--output",
        s(&cells),
    ]));
    let h5 = aido::tokenize::h5::H5::open(&cells).unwrap();
    assert_eq!(
        h5.read_strings("var/_index").unwrap(),
        genes
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        "the screen's gene order"
    );
    let obs = aido::tokenize::h5ad::read_obs(&cells).unwrap();
    assert_eq!(obs.len(), 7 * (all.len() + 1));
    let tg = obs.column("target_gene").unwrap();
    let labels: std::collections::BTreeSet<String> =
        (0..obs.len()).map(|i| tg.display(i)).collect();
    assert!(labels.contains("non-targeting"));
    let single = &singles[0];
    assert!(
        labels.contains(single.as_str()),
        "a single is labelled by its gene"
    );
    let mut src = aido::tokenize::open_source(&cells, &Default::default()).unwrap();
    let m = aido::tokenize::read_all(src.as_mut()).unwrap();
    assert!(m.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    let report = dir.path().join("score.json");
    ok(&run(&[
        "perturb",
        "score",
        "--real",
        s(&x),
        "--predicted",
        s(&cells),
        "--perturbation-column",
        "condition",
        "--control-value",
        "ctrl",
        "--report",
        s(&report),
    ]));
    let r = json(&report);
    assert_eq!(r["n_perturbations"].as_u64().unwrap() as usize, all.len());
    for k in [
        "overlap_at_N",
        "discrimination_score_l1",
        "mae",
        "centroid_accuracy",
    ] {
        let v = r["mean"][k].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{k} = {v}");
    }
    for k in [
        "overlap_at_N",
        "discrimination_score_l1",
        "mae",
        "avg_score",
    ] {
        assert!(r["baseline_normalized"][k].as_f64().unwrap() >= 0.0, "{k}");
    }
    let _ = panel;
}

#[test]
fn perturb_benchmark_summarises_repeated_splits_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (x, _, _) = screen(dir.path());
    let out = dir.path().join("bench");
    let args = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "perturb".to_string(),
            "benchmark".into(),
            "--input".into(),
            s(&x).into(),
            "--out".into(),
            s(out).into(),
            "--no-backbone".into(),
            "--epochs".into(),
            "1".into(),
            "--hidden".into(),
            "8".into(),
            "--pool".into(),
            "20".into(),
            "--splits".into(),
            "2".into(),
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let run_v = |v: Vec<String>| {
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        run(&r)
    };
    ok(&run_v(args(&out, &[])));
    let b = json(&out.join("benchmark.json"));
    let methods = b["methods"].as_object().unwrap();
    for m in [
        "model",
        "linear",
        "mean_delta",
        "matching_mean",
        "no_change",
    ] {
        assert!(methods.contains_key(m), "{m}");
    }
    for (m, groups) in methods {
        let groups = groups.as_object().unwrap();
        assert!(!groups.is_empty(), "{m}");
        for (g, ks) in groups {
            assert!(GROUPS.contains(&g.as_str()), "{g}");
            let s = &ks["mse_top20_de"];
            let (mean, lo, hi) = (
                s["mean"].as_f64().unwrap(),
                s["ci95"][0].as_f64().unwrap(),
                s["ci95"][1].as_f64().unwrap(),
            );
            assert!(lo <= mean && mean <= hi, "{m}/{g}");
            assert!((1..=2).contains(&s["n"].as_u64().unwrap()));
        }
    }
    assert_eq!(b["splits"].as_array().unwrap().len(), 2);
    assert_eq!(b["settings"]["seeds"], serde_json::json!([1, 2]));
    let tsv = std::fs::read_to_string(out.join("benchmark.tsv")).unwrap();
    assert!(tsv.starts_with("method\tgroup\tmetric\tmean\tsd\tci95_low\tci95_high\tn\n"));
    assert_eq!(
        &std::fs::read(out.join("benchmark.png")).unwrap()[1..4],
        b"PNG"
    );
    // a second run reads the splits back and gives the same summaries
    ok(&run_v(args(&out, &[])));
    let again = json(&out.join("benchmark.json"));
    assert_eq!(again["methods"], b["methods"]);
    assert!(
        again["splits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["fitted_now"] == false)
    );
    // the same folder with other settings is refused, not mixed
    let mut other = args(&out, &[]);
    other[8] = "2".into(); // --epochs
    fails_with(&run_v(other), &["holds a fit with other settings", "fit"]);
    // Ahlmann-Eltze's protocol: the doubles, half of them tested
    let dbl = dir.path().join("dbl");
    ok(&run_v(args(
        &dbl,
        &["--protocol", "double", "--methods", "model,additive,linear"],
    )));
    let d = json(&dbl.join("benchmark.json"));
    assert_eq!(d["methods"].as_object().unwrap().len(), 3);
    // every test double of this protocol has both singles in training: additive applies
    assert_eq!(d["methods"]["additive"]["double"]["mse_top20_de"]["n"], 2);
    assert_eq!(
        d["methods"]["model"].as_object().unwrap().len(),
        1,
        "only the double group"
    );
    // refused before fitting: an unknown method, a method that needs what is not given, a
    // screen too small for the protocol
    let bad = dir.path().join("bad");
    fails_with(
        &run_v(args(&bad, &["--methods", "gears"])),
        &["--methods", "unknown method 'gears'"],
    );
    fails_with(
        &run_v(args(&bad, &["--methods", "linear_encoder"])),
        &["linear_encoder", "--model"],
    );
    let tiny = dir.path().join("tiny.h5ad");
    ok(&run(&[
        "simulate",
        "--perturbations",
        "4",
        "--genes",
        "60",
        "--programs",
        "2",
        "--doubles",
        "2",
        "--control-cells",
        "30",
        "--cells-per-condition",
        "4",
        "--seed",
        "2",
        "--output",
        s(&tiny),
    ]));
    let mut v = args(&bad, &["--protocol", "double"]);
    v[3] = s(&tiny).to_string();
    fails_with(&run_v(v), &["at least 4 double perturbations", "has 2"]);
    assert!(!bad.exists());
}

#[test]
fn perturb_fit_with_the_encoder_as_backbone_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (x, panel, _) = screen(dir.path());
    let model = random_model(dir.path(), &panel);
    let out = dir.path().join("fit_bb");
    ok(&run(&[
        "perturb",
        "fit",
        "--input",
        s(&x),
        "--out",
        s(&out),
        "--model",
        s(&model),
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--pool",
        "12",
        "--split",
        "combo_seen2",
    ]));
    let r = json(&out.join("report.json"));
    assert_eq!(r["settings"]["gene_embeddings"], "backbone");
    assert_eq!(r["settings"]["backbone"]["pool_cells"], 12);
    assert!(out.join("model/controls.safetensors").is_file());
    // Predicting from the backbone folder needs no encoder.
    ok(&run(&[
        "perturb",
        "predict",
        "--model",
        s(&out.join("model")),
        "--conditions",
        "ctrl",
        "--output",
        s(&dir.path().join("c.json")),
    ]));
    // Errors.
    let o = run(&[
        "perturb",
        "fit",
        "--input",
        s(&x),
        "--out",
        s(&dir.path().join("n")),
    ]);
    fails_with(&o, &["--model DIR", "--no-backbone"]);
    let o = run(&[
        "perturb",
        "fit",
        "--input",
        s(&x),
        "--out",
        s(&dir.path().join("n")),
        "--no-backbone",
        "--condition-column",
        "perturbation",
    ]);
    fails_with(&o, &["no condition column 'perturbation'", "condition"]);
    let o = run(&[
        "perturb",
        "fit",
        "--input",
        s(&x),
        "--out",
        s(&dir.path().join("n")),
        "--no-backbone",
        "--control-value",
        "control",
    ]);
    fails_with(&o, &["control"]);
    // --precision is the backbone's: without one it would be silently ignored.
    let o = run(&[
        "perturb",
        "fit",
        "--input",
        s(&x),
        "--out",
        s(&dir.path().join("n")),
        "--no-backbone",
        "--precision",
        "bf16",
    ]);
    fails_with(&o, &["--precision", "--no-backbone"]);
    // A perturbation embedding without rows for the screen's genes, and a decay out of range.
    let emb = dir.path().join("emb.tsv");
    std::fs::write(&emb, "NOTAGENE\t1\t2\n").unwrap();
    let n_dir = dir.path().join("n");
    let bad = |extra: &[&str]| {
        let mut a = vec![
            "perturb",
            "fit",
            "--input",
            s(&x),
            "--out",
            s(&n_dir),
            "--no-backbone",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    fails_with(
        &bad(&["--perturbation-embedding", s(&emb)]),
        &["--perturbation-embedding", "emb.tsv", "no row for"],
    );
    fails_with(&bad(&["--lr-decay", "0"]), &["--lr-decay", "(0, 1]"]);
    assert!(!dir.path().join("n").exists());
}

#[test]
fn insilico_knockout_of_an_unexpressed_gene_is_zero_and_batching_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, panel, ctrl) = screen(dir.path());
    let model = random_model(dir.path(), &panel);
    // A gene some of the first 12 cells lack and others express.
    let mut src = open_source(&ctrl, &ReadOptions::default()).unwrap();
    let names = src.gene_names().to_vec();
    let dense = read_all(src.as_mut()).unwrap().to_dense(names.len());
    let j = (0..names.len())
        .find(|&j| {
            let z = dense[..12].iter().filter(|r| r[j] == 0.0).count();
            z > 0 && z < 12
        })
        .unwrap();
    let other = (0..names.len()).find(|&k| k != j).unwrap();
    let genes = format!("{},{}", names[j], names[other]);
    let shifts = |bs: &str, tag: &str| -> Vec<Vec<f32>> {
        let out = dir.path().join(format!("ins_{tag}.h5ad"));
        ok(&run(&[
            "insilico",
            "--model",
            s(&model),
            "--input",
            s(&ctrl),
            "--output",
            s(&out),
            "--perturb-genes",
            &genes,
            "--max-cells",
            "12",
            "--batch-size",
            bs,
            "--quiet",
        ]));
        let tsv = std::fs::read_to_string(out.with_extension("tsv")).unwrap();
        assert!(tsv.starts_with("rank\tgene\tmean_shift\tn_expressed"));
        assert_eq!(tsv.lines().count(), 3);
        let mut s = open_source(&out, &ReadOptions::default()).unwrap();
        assert_eq!(s.gene_names(), [names[j].clone(), names[other].clone()]);
        read_all(s.as_mut()).unwrap().to_dense(2)
    };
    let one = shifts("1", "one");
    let many = shifts("8", "batched");
    assert_eq!(one.len(), 12);
    for (c, row) in one.iter().enumerate() {
        if dense[c][j] == 0.0 {
            assert_eq!(row[0], 0.0, "cell {c}: knockout of an unexpressed gene");
        } else {
            assert!(
                row[0] > 0.0,
                "cell {c}: a knockout of an expressed gene moves it"
            );
        }
        for k in 0..2 {
            assert!(
                (row[k] - many[c][k]).abs() < 1e-6,
                "batching changed cell {c}"
            );
        }
    }
    // Over-expression moves every cell, expressed or not.
    let out = dir.path().join("oe.h5ad");
    ok(&run(&[
        "insilico",
        "--model",
        s(&model),
        "--input",
        s(&ctrl),
        "--output",
        s(&out),
        "--perturb-genes",
        &names[j],
        "--max-cells",
        "12",
        "--mode",
        "overexpress:4",
        "--quiet",
    ]));
    let mut so = open_source(&out, &ReadOptions::default()).unwrap();
    let oe = read_all(so.as_mut()).unwrap().to_dense(1);
    assert!(oe.iter().all(|r| r[0] > 0.0));
    // Errors.
    let bad = dir.path().join("bad.h5ad");
    let o = run(&[
        "insilico",
        "--model",
        s(&model),
        "--input",
        s(&ctrl),
        "--output",
        s(&bad),
        "--perturb-genes",
        "NOPE",
    ]);
    fails_with(&o, &["'NOPE' is not in the model's gene list"]);
    let o = run(&[
        "insilico",
        "--model",
        s(&model),
        "--input",
        s(&ctrl),
        "--output",
        s(&bad),
        "--all-genes",
        "--mode",
        "overexpress:-1",
    ]);
    fails_with(&o, &["FOLD must be"]);
    assert!(!bad.exists());
}
