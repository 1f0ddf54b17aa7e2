//! `aido cluster` and `aido evaluate` through the binary: outputs that keep the user's file,
//! reports with the keys, agreement with scanpy on zheng68k, determinism across
//! thread counts, and the bad inputs of the issue (each a clear error, nothing written).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aido::tokenize::h5ad::{read_obs, read_obsm};
use aido::tokenize::h5ad_edit::{H5adAdditions, write_input_plus};
use aido::tokenize::shared::testdata_path;
use aido::tokenize::{ObsColumn, ReadOptions, open_source, read_all};
use serde_json::Value;

fn aido() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aido"))
}

fn run(args: &[&str], files: &[(&str, &Path)]) -> Output {
    let mut c = aido();
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

fn fails_with(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected a failure");
    let e = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(e.contains(n), "error lacks '{n}': {e}");
    }
}

fn report(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn zheng() -> PathBuf {
    testdata_path("data/zheng68k.h5ad")
}

#[test]
fn expression_baseline_on_zheng68k_keeps_the_file_and_matches_scanpy() {
    let dir = tempfile::tempdir().unwrap();
    let (out, rep, png) = (
        dir.path().join("z.h5ad"),
        dir.path().join("r.json"),
        dir.path().join("u.png"),
    );
    let o = run(
        &["cluster", "--expression", "--label-column", "celltype"],
        &[
            ("--input", &zheng()),
            ("--output", &out),
            ("--report", &rep),
            ("--umap-png", &png),
        ],
    );
    ok(&o);
    let r = report(&rep);
    for k in [
        "n_cells",
        "n_clusters",
        "resolution",
        "ari",
        "nmi",
        "ami",
        "silhouette",
        "label_asw",
        "seconds",
        "settings",
    ] {
        assert!(r.get(k).is_some(), "report lacks {k}");
    }
    assert_eq!(r["n_cells"], 165);
    assert_eq!(r["n_clusters"], 11, "searched to the 11 labels");
    assert_eq!(
        r["settings"]["n_hvg"], 1696,
        "scanpy 1.11.5 selects 1,696 HVGs on this file"
    );
    // scanpy 1.11.5 with the same settings and search (benches/python/scanpy_cluster.py):
    // ARI 0.670, NMI 0.778. Different Leiden implementations differ by a few hundredths.
    let (ari, nmi) = (r["ari"].as_f64().unwrap(), r["nmi"].as_f64().unwrap());
    assert!((ari - 0.670).abs() < 0.06, "ARI {ari}");
    assert!((nmi - 0.778).abs() < 0.05, "NMI {nmi}");
    // the whole input is there, plus the results
    let mut a = open_source(zheng(), &ReadOptions::default()).unwrap();
    let mut b = open_source(&out, &ReadOptions::default()).unwrap();
    assert_eq!(read_all(a.as_mut()).unwrap(), read_all(b.as_mut()).unwrap());
    let (obs_in, obs) = (read_obs(&zheng()).unwrap(), read_obs(&out).unwrap());
    for (k, c) in &obs_in.columns {
        assert_eq!(obs.column(k), Some(c));
    }
    match obs.column("aido_leiden").unwrap() {
        ObsColumn::Categorical { categories, .. } => assert_eq!(categories.len(), 11),
        other => panic!("aido_leiden is not categorical: {other:?}"),
    }
    assert_eq!(read_obsm(&out, "X_pca").unwrap().dim(), (165, 50));
    assert_eq!(read_obsm(&out, "X_umap").unwrap().dim(), (165, 2));
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn embedding_with_batches_and_evaluate_agree() {
    let dir = tempfile::tempdir().unwrap();
    let cx = testdata_path("data/cellxgene.h5ad");
    let base = dir.path().join("base.h5ad");
    ok(&run(
        &["cluster", "--expression", "--resolution", "1.0"],
        &[("--input", &cx), ("--output", &base)],
    ));
    // cluster the PCA of the baseline as an "embedding", with donors as batches
    let (out, rep) = (dir.path().join("e.h5ad"), dir.path().join("e.json"));
    let o = run(
        &[
            "cluster",
            "--embedding",
            "X_pca",
            "--label-column",
            "cell_type",
            "--batch-column",
            "donor_id",
        ],
        &[("--input", &base), ("--output", &out), ("--report", &rep)],
    );
    ok(&o);
    let r = report(&rep);
    for k in ["batch_asw", "graph_connectivity", "ilisi"] {
        let v = r[k].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    // evaluate reads the same columns back and gives the same agreement
    let ev = dir.path().join("ev.json");
    let o = run(
        &[
            "evaluate",
            "--label-column",
            "cell_type",
            "--cluster-column",
            "aido_leiden",
            "--prediction-column",
            "cell_type",
            "--embedding",
            "X_pca",
            "--batch-column",
            "donor_id",
        ],
        &[("--input", &out), ("--report", &ev)],
    );
    ok(&o);
    let e = report(&ev);
    for k in ["ari", "nmi", "ami"] {
        let (a, b) = (e[k].as_f64().unwrap(), r[k].as_f64().unwrap());
        assert!((a - b).abs() < 1e-12, "{k}: {a} vs {b}");
    }
    for k in [
        "homogeneity",
        "completeness",
        "silhouette",
        "silhouette_cosine",
        "label_asw",
        "batch_asw",
        "graph_connectivity",
        "ilisi",
        "per_class_f1",
        "confusion",
    ] {
        assert!(e.get(k).is_some(), "evaluate report lacks {k}");
    }
    assert_eq!(e["accuracy"], 1.0, "labels against themselves");
    assert_eq!(e["macro_f1"], 1.0);
}

/// scanpy's `key_added` names (scanpy 1.11: `tl.leiden` obs/uns K, `pp.neighbors` uns K with
/// obsp `K_connectivities`/`K_distances`, `pp.pca` obsm/varm/uns K, `tl.umap` obsm K); checked
/// with scanpy's own tools in tests/python/scanpy_tools.py.
#[test]
fn key_added_writes_beside_the_defaults_and_replacing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.h5ad");
    ok(&run(
        &[
            "simulate",
            "--cells",
            "300",
            "--genes",
            "500",
            "--cell-types",
            "4",
        ],
        &[("--output", &sim)],
    ));
    let base = dir.path().join("base.h5ad");
    ok(&run(
        &["cluster", "--expression", "--resolution", "1.0"],
        &[("--input", &sim), ("--output", &base)],
    ));
    let out = dir.path().join("k.h5ad");
    let o = run(
        &[
            "cluster",
            "--embedding",
            "X_pca",
            "--n-pcs",
            "10",
            "--key-added",
            "emb",
            "--resolution",
            "0.5",
        ],
        &[("--input", &base), ("--output", &out)],
    );
    ok(&o);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("replacing"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let h5 = aido::tokenize::h5::H5::open(&out).unwrap();
    for entry in [
        "obs/emb",
        "uns/emb",
        "uns/emb_colors",
        "uns/emb_neighbors",
        "obsp/emb_neighbors_connectivities",
        "obsp/emb_neighbors_distances",
        "obsm/emb_pca",
        "uns/emb_pca",
        "obsm/emb_umap",
        // the first run's results are all still there
        "obs/aido_leiden",
        "uns/aido_leiden",
        "obsm/X_pca",
        "varm/PCs",
        "obsm/X_umap",
        "obsp/connectivities",
        "uns/neighbors",
    ] {
        assert!(
            h5.is_group(entry) || h5.is_dataset(entry),
            "{entry} missing"
        );
    }
    assert_eq!(
        h5.read_strings("uns/emb_neighbors/connectivities_key")
            .unwrap(),
        vec!["emb_neighbors_connectivities".to_string()]
    );
    assert_eq!(
        h5.read_strings("uns/emb_neighbors/params/use_rep").unwrap(),
        vec!["emb_pca".to_string()]
    );
    assert_eq!(
        read_obsm(&out, "X_pca").unwrap(),
        read_obsm(&base, "X_pca").unwrap()
    );
    assert_eq!(read_obsm(&out, "emb_pca").unwrap().dim().1, 10);
    // the same key again, and the default names on a file that has them: both say so
    let o = run(
        &["cluster", "--embedding", "X_pca", "--key-added", "emb"],
        &[("--input", &out), ("--output", &dir.path().join("k2.h5ad"))],
    );
    ok(&o);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("replacing obs/emb, obsm/emb_pca, obsm/emb_umap") && e.contains("--key-added"),
        "{e}"
    );
    let o = run(
        &["cluster", "--embedding", "emb_pca"],
        &[("--input", &out), ("--output", &dir.path().join("k3.h5ad"))],
    );
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("replacing obs/aido_leiden, obsm/X_pca"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // a key that would overwrite the label column, or that anndata cannot hold, is refused
    for (key, needle) in [("cell_type", "label column"), ("a/b", "no '/'")] {
        let bad = dir.path().join("bad.h5ad");
        fails_with(
            &run(
                &[
                    "cluster",
                    "--embedding",
                    "X_pca",
                    "--label-column",
                    "cell_type",
                    "--key-added",
                    key,
                ],
                &[("--input", &base), ("--output", &bad)],
            ),
            &["--key-added", needle],
        );
        assert!(!bad.exists());
    }
}

#[test]
fn same_seed_same_output_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for threads in ["1", "2", "2"] {
        let out = dir.path().join(format!("t{}.h5ad", outs.len()));
        let o = aido()
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "cluster",
                "--expression",
                "--label-column",
                "celltype",
                "--input",
            ])
            .arg(zheng())
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        ok(&o);
        outs.push((
            read_obsm(&out, "X_pca").unwrap(),
            read_obsm(&out, "X_umap").unwrap(),
            read_obs(&out).unwrap(),
        ));
    }
    assert_eq!(outs[0], outs[1], "1 thread against 2");
    assert_eq!(outs[1], outs[2], "two runs");
}

fn with_obs_column(dir: &Path, name: &str, col: ObsColumn) -> PathBuf {
    let p = dir.join(format!("{name}.h5ad"));
    let add = H5adAdditions {
        obs: vec![(name.into(), col)],
        ..Default::default()
    };
    write_input_plus(&zheng(), &p, &add).unwrap();
    p
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.h5ad");
    let z = zheng();
    // a missing obs column: the file, the column and what is there
    fails_with(
        &run(
            &["cluster", "--expression", "--label-column", "cell_typ"],
            &[("--input", &z), ("--output", &out)],
        ),
        &["zheng68k.h5ad", "obs has no column 'cell_typ'", "celltype"],
    );
    // an absent obsm key
    fails_with(
        &run(
            &["cluster", "--embedding", "X_aido_cell"],
            &[("--input", &z), ("--output", &out)],
        ),
        &["zheng68k.h5ad", "obsm/X_aido_cell"],
    );
    // an obsm matrix with the wrong row count, and one with a NaN
    let bad = dir.path().join("bad.h5ad");
    std::fs::copy(&z, &bad).unwrap();
    {
        let f = hdf5_pure::File::open_rw(&bad).unwrap();
        let root = f.root();
        root.create_dataset("obsm/short", |b| {
            b.with_f32_data(&[0.0; 20]).with_shape(&[10, 2]);
        })
        .unwrap();
        let mut v = vec![0.5f32; 165 * 4];
        v[4 * 7 + 2] = f32::NAN;
        root.create_dataset("obsm/nan", |b| {
            b.with_f32_data(&v).with_shape(&[165, 4]);
        })
        .unwrap();
        f.commit().unwrap();
    }
    fails_with(
        &run(
            &["cluster", "--embedding", "short"],
            &[("--input", &bad), ("--output", &out)],
        ),
        &["bad.h5ad", "obsm/short", "10 rows", "165 cells"],
    );
    fails_with(
        &run(
            &["cluster", "--embedding", "nan"],
            &[("--input", &bad), ("--output", &out)],
        ),
        &["bad.h5ad", "obsm/nan", "NaN", "cell 7"],
    );
    // fewer than 2 labels for a silhouette
    let one = with_obs_column(dir.path(), "one", ObsColumn::Str(vec!["T".into(); 165]));
    fails_with(
        &run(
            &[
                "cluster",
                "--expression",
                "--label-column",
                "one",
                "--resolution",
                "1",
            ],
            &[("--input", &one), ("--output", &out)],
        ),
        &["one.h5ad", "at least 2", "1 distinct label"],
    );
    let ev = dir.path().join("never.json");
    fails_with(
        &run(
            &["evaluate", "--label-column", "one", "--embedding", "X_pca"],
            &[("--input", &one), ("--report", &ev)],
        ),
        &["one.h5ad"],
    );
    // a label missing for a cell
    let mut codes = vec![0i32; 165];
    codes[3] = -1;
    let miss = with_obs_column(
        dir.path(),
        "miss",
        ObsColumn::Categorical {
            codes,
            categories: vec!["A".into(), "B".into()],
            ordered: false,
        },
    );
    fails_with(
        &run(
            &["cluster", "--expression", "--label-column", "miss"],
            &[("--input", &miss), ("--output", &out)],
        ),
        &["miss.h5ad", "obs/miss", "cell 3"],
    );
    // normalized data given to --expression (sciplex3 is log-normalized)
    fails_with(
        &run(
            &["cluster", "--expression"],
            &[
                ("--input", &testdata_path("data/sciplex3.h5ad")),
                ("--output", &out),
            ],
        ),
        &[
            "sciplex3.h5ad",
            "X",
            "log-normalized",
            "raw counts",
            // where else counts might be: none here (an empty layers group, no raw/X)
            "The file has no layers; no raw/X.",
        ],
    );
    // --use-raw on a file without raw/X names what is missing
    fails_with(
        &run(
            &["cluster", "--expression", "--use-raw"],
            &[
                ("--input", &testdata_path("data/sciplex3.h5ad")),
                ("--output", &out),
            ],
        ),
        &["sciplex3.h5ad", "raw/X", "adata.raw"],
    );
    assert!(!out.exists() && !ev.exists());
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.starts_with("never"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
