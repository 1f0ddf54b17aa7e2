//! `aido finetune` and `aido predict` through the binary, on zheng68k (165 PBMCs, 11 types)
//! with a small random-weight encoder over a 200-gene panel: the report's keys, the classifier
//! folder, predictions that reproduce the report, and the bad inputs of the issue (each a clear
//! error, nothing written).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aido::model::burn::tensor::backend::Backend;
use aido::model::{AidoCellConfig, Cpu, save_checkpoint};
use aido::tokenize::h5ad::read_obs;
use aido::tokenize::h5ad_edit::{H5adAdditions, write_input_plus};
use aido::tokenize::shared::testdata_path;
use aido::tokenize::{ObsColumn, ReadOptions, open_source};
use serde_json::Value;

fn run(args: &[&str], files: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aido"));
    c.args(args);
    for (flag, p) in files {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

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

fn zheng() -> PathBuf {
    testdata_path("data/zheng68k.h5ad")
}

/// A random 2-block encoder (H 32) over the first 200 genes of zheng68k, with its genes.tsv.
fn panel_model(dir: &Path) -> PathBuf {
    let src = open_source(zheng(), &ReadOptions::default()).unwrap();
    let names: Vec<String> = src.gene_names()[..200].to_vec();
    let m = dir.join("model");
    let cfg = AidoCellConfig::new(200, 32, 2, 2, 64);
    let dev = Default::default();
    Cpu::seed(&dev, 5);
    save_checkpoint(&cfg.init::<Cpu>(false, &dev), &cfg, &m).unwrap();
    let mut tsv = String::from("gene_name\tindex\n");
    for (i, n) in names.iter().enumerate() {
        tsv.push_str(&format!("{n}\t{i}\n"));
    }
    std::fs::write(m.join("genes.tsv"), tsv).unwrap();
    m
}

fn report(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn finetune_then_predict_reproduces_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = panel_model(dir.path());
    let out = dir.path().join("run");
    let args = [
        "finetune",
        "--label-column",
        "celltype",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--baselines",
        "--seed",
        "1",
    ];
    ok(&run(
        &args,
        &[("--model", &model), ("--input", &zheng()), ("--out", &out)],
    ));
    let r = report(&out.join("report.json"));
    // 15 cells per type: round(1.5) = 2 val, round(3) = 3 test, 10 train, for 11 types
    assert_eq!(
        (
            r["n_train"].as_u64(),
            r["n_val"].as_u64(),
            r["n_test"].as_u64()
        ),
        (Some(110), Some(22), Some(33))
    );
    assert_eq!(r["epochs"].as_array().unwrap().len(), 3);
    assert!(
        r["class_weights"]["CD34+"].as_f64() == Some(1.0),
        "balanced classes: all weights 1"
    );
    let best = r["best_epoch"].as_u64().unwrap();
    assert!((1..=3).contains(&best));
    for k in ["accuracy", "macro_f1", "per_class_f1", "confusion"] {
        assert!(!r["test"][k].is_null(), "test.{k}");
    }
    for b in ["logreg_pca", "knn_pca"] {
        let f = r["baselines"][b]["macro_f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f), "{b}");
    }
    assert_eq!(
        r["cache"]["kind"], "Hidden { start: 1 }",
        "last:1 caches the stream entering block 1"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "genes.tsv",
        "head.mpk",
        "classifier.json",
    ] {
        assert!(out.join("classifier").join(f).is_file(), "classifier/{f}");
    }
    let png = std::fs::read(out.join("confusion.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // predict: the whole input plus the results, and the report's test predictions
    let pred = dir.path().join("pred.h5ad");
    ok(&run(
        &["predict"],
        &[
            ("--model", &out.join("classifier")),
            ("--input", &zheng()),
            ("--output", &pred),
        ],
    ));
    let obs = read_obs(&pred).unwrap();
    let got = obs.column("aido_cell_type").unwrap();
    let conf = match obs.column("aido_cell_type_confidence").unwrap() {
        ObsColumn::Float(v) => v.clone(),
        o => panic!("{o:?}"),
    };
    assert!(conf.iter().all(|&c| c > 0.0 && c <= 1.0));
    let tp = r["test_predictions"].as_object().unwrap();
    assert_eq!(tp.len(), 33);
    for (name, label) in tp {
        let i = (0..obs.len()).find(|&i| &obs.cell_name(i) == name).unwrap();
        assert_eq!(got.display(i), label.as_str().unwrap(), "cell {name}");
    }
    let proba = aido::tokenize::h5ad::read_obsm(&pred, "aido_cell_type_proba").unwrap();
    assert_eq!(proba.dim(), (165, 11));
    let src = read_obs(&zheng()).unwrap();
    for (n, _) in &src.columns {
        assert!(obs.column(n).is_some(), "obs/{n} kept");
    }
    // --key-added: the same predictions under another prefix, the first ones kept; the
    // default prefix again says what it replaces.
    let keyed = dir.path().join("keyed.h5ad");
    let o = run(
        &["predict", "--key-added", "ct2"],
        &[
            ("--model", &out.join("classifier")),
            ("--input", &pred),
            ("--output", &keyed),
        ],
    );
    ok(&o);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("replacing"));
    let k = read_obs(&keyed).unwrap();
    for i in 0..k.len() {
        assert_eq!(
            k.column("ct2").unwrap().display(i),
            got.display(i),
            "cell {i}"
        );
        assert_eq!(
            k.column("aido_cell_type").unwrap().display(i),
            got.display(i)
        );
    }
    assert!(k.column("ct2_confidence").is_some());
    assert_eq!(
        aido::tokenize::h5ad::read_obsm(&keyed, "ct2_proba").unwrap(),
        proba
    );
    let o = run(
        &["predict"],
        &[
            ("--model", &out.join("classifier")),
            ("--input", &keyed),
            ("--output", &dir.path().join("again.h5ad")),
        ],
    );
    ok(&o);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("replacing obs/aido_cell_type, obs/aido_cell_type_confidence, obsm/aido_cell_type_proba, uns/aido_cell_type_classes, uns/aido_cell_type_model"),
        "{e}"
    );
    // --max-cells: the first cells only, in a small file, with the same predictions
    let few = dir.path().join("few.h5ad");
    ok(&run(
        &["predict", "--max-cells", "5", "--batch-size", "2"],
        &[
            ("--model", &out.join("classifier")),
            ("--input", &zheng()),
            ("--output", &few),
        ],
    ));
    let few_obs = read_obs(&few).unwrap();
    assert_eq!(few_obs.len(), 5);
    let few_got = few_obs.column("aido_cell_type").unwrap();
    for i in 0..5 {
        assert_eq!(few_obs.cell_name(i), obs.cell_name(i));
        assert_eq!(few_got.display(i), got.display(i), "cell {i}");
    }
    // an existing run folder is not overwritten; --resume finishes nothing new
    fails_with(
        &run(
            &args,
            &[("--model", &model), ("--input", &zheng()), ("--out", &out)],
        ),
        &["not empty", "--resume"],
    );
    let mut more = args.to_vec();
    more.push("--resume");
    ok(&run(
        &more,
        &[("--model", &model), ("--input", &zheng()), ("--out", &out)],
    ));
    assert_eq!(
        report(&out.join("report.json"))["test_predictions"],
        r["test_predictions"]
    );
}

fn with_obs(dir: &Path, name: &str, col: ObsColumn) -> PathBuf {
    let p = dir.join(format!("{name}.h5ad"));
    write_input_plus(
        &zheng(),
        &p,
        &H5adAdditions {
            obs: vec![(name.into(), col)],
            ..Default::default()
        },
    )
    .unwrap();
    p
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = panel_model(dir.path());
    let out = dir.path().join("never");
    let z = zheng();
    let ft = |extra: &[&str], input: &Path| {
        let mut a = vec!["finetune", "--epochs", "1"];
        a.extend_from_slice(extra);
        run(
            &a,
            &[("--model", &model), ("--input", input), ("--out", &out)],
        )
    };
    fails_with(
        &ft(&["--label-column", "cell_typ"], &z),
        &["zheng68k.h5ad", "no column 'cell_typ'", "celltype"],
    );
    let one = with_obs(dir.path(), "one", ObsColumn::Str(vec!["T".into(); 165]));
    fails_with(
        &ft(&["--label-column", "one"], &one),
        &["obs/one has a single class ('T')"],
    );
    fails_with(
        &ft(
            &[
                "--label-column",
                "celltype",
                "--val-fraction",
                "0.45",
                "--test-fraction",
                "0.5",
            ],
            &z,
        ),
        &["needs at least"],
    );
    let small: Vec<String> = (0..165)
        .map(|i| {
            if i < 3 {
                "rare".into()
            } else {
                "common".into()
            }
        })
        .collect();
    let rare = with_obs(dir.path(), "rare", ObsColumn::Str(small));
    fails_with(
        &ft(&["--label-column", "rare", "--test-fraction", "0.5"], &rare),
        &["class 'rare' has 3 cells", "at least 4"],
    );
    let split: Vec<String> = (0..165)
        .map(|i| ["train", "val", "test", "holdout"][i % 4].to_string())
        .collect();
    let sp = with_obs(dir.path(), "split", ObsColumn::Str(split));
    fails_with(
        &ft(
            &["--label-column", "celltype", "--split-column", "split"],
            &sp,
        ),
        &["obs/split holds 'holdout' for cell 3"],
    );
    fails_with(
        &ft(&["--label-column", "celltype", "--trainable", "last:3"], &z),
        &["last:3", "2 blocks"],
    );
    fails_with(
        &ft(&["--label-column", "celltype", "--trainable", "half"], &z),
        &["trainable part 'half'"],
    );
    fails_with(
        &ft(&["--label-column", "celltype", "--resume"], &z),
        &["holds no run to resume"],
    );
    assert!(!out.exists(), "nothing written for bad input");
    // a classifier applied to data whose genes do not align
    let good = dir.path().join("good");
    ok(&run(
        &[
            "finetune",
            "--label-column",
            "celltype",
            "--epochs",
            "1",
            "--trainable",
            "frozen",
        ],
        &[("--model", &model), ("--input", &z), ("--out", &good)],
    ));
    let pred = dir.path().join("pred.h5ad");
    fails_with(
        &run(
            &["predict"],
            &[
                ("--model", &good.join("classifier")),
                (
                    "--input",
                    &testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"),
                ),
                ("--output", &pred),
            ],
        ),
        &["10x_v3_filtered_feature_bc_matrix.h5"],
    );
    fails_with(
        &run(
            &["predict"],
            &[("--model", &model), ("--input", &z), ("--output", &pred)],
        ),
        &["not a classifier folder"],
    );
    assert!(!pred.exists());
}

#[test]
fn a_panel_model_embeds_the_file_it_was_made_from() {
    // 200 of zheng68k's 9,621 genes: 2% of the data's genes, all of the model's. The overlap is
    // judged against the panel (at least half measured), as in pretraining.
    let dir = tempfile::tempdir().unwrap();
    let model = panel_model(dir.path());
    let out = dir.path().join("emb.h5ad");
    ok(&run(
        &["embed"],
        &[
            ("--model", &model),
            ("--input", &zheng()),
            ("--output", &out),
        ],
    ));
    let m = aido::tokenize::h5ad::read_obsm(&out, "X_aido_cell").unwrap();
    assert_eq!(m.dim(), (165, 32));
}
