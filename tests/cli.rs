//! The `aido` binary's interface, as it is checked from outside.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use aido::tokenize::shared::testdata_path;

fn aido() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aido"))
}

fn load(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn tokenize_writes_values_and_present() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.safetensors");
    // `--gene-id exact`: numpy's var_names ∩ vocabulary, the authors' alignment.
    let o = aido()
        .args(["tokenize", "--gene-id", "exact", "--input"])
        .arg(testdata_path("data/zheng68k.h5ad"))
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("8328 matched"), "{stdout}");
    let bytes = load(&out);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("values").unwrap();
    assert_eq!(
        (v.shape(), v.dtype()),
        (&[165usize, 19_266][..], safetensors::Dtype::F32)
    );
    let p = st.tensor("present").unwrap();
    assert_eq!(
        (p.shape(), p.dtype()),
        (&[19_266usize][..], safetensors::Dtype::U8)
    );
    assert_eq!(p.data().iter().map(|&b| b as usize).sum::<usize>(), 8330);
}

#[test]
fn tokenize_with_depth_floor_none_gives_real_depths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.safetensors");
    let ok = aido()
        .args([
            "tokenize",
            "--depth-floor",
            "none",
            "--gene-column",
            "feature_name",
            "--gene-id",
            "exact",
            "--input",
        ])
        .arg(testdata_path("data/cellxgene.h5ad"))
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(ok.success());
    let bytes = load(&out);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let d = st.tensor("values").unwrap().data();
    let at = |i: usize| f32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().unwrap());
    // Cell 0 of cellxgene: aligned total 5,984 (anndata/numpy) -> log10 = 3.77699.
    assert!((at(19_264) - 5984f32.log10()).abs() < 1e-6);
    assert_eq!(at(19_264), at(19_265));
}

/// Cell Ranger's Ensembl ids (`--gene-column id`) align through the identifier table, about as
/// many genes as the symbols of the same features; `--gene-id symbol` refuses them with advice.
#[test]
fn tokenize_aligns_ensembl_ids_and_reports_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str], out: &str| {
        aido()
            .args(["tokenize", "--input"])
            .arg(testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5"))
            .arg("--genes")
            .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
            .arg("--output")
            .arg(dir.path().join(out))
            .args(["--skip-empty"])
            .args(extra)
            .output()
            .unwrap()
    };
    let by_id = run(&["--gene-column", "id"], "id.safetensors");
    assert!(
        by_id.status.success(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    let stdout = String::from_utf8_lossy(&by_id.stdout);
    assert!(
        stdout.contains("gene ids: auto: Ensembl ids (507 of 507 names)"),
        "{stdout}"
    );
    assert!(stdout.contains("0 by symbol"), "{stdout}");
    let refused = run(
        &["--gene-column", "id", "--gene-id", "symbol"],
        "no.safetensors",
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--gene-id ensembl"), "{err}");
    assert!(!dir.path().join("no.safetensors").exists());
}

#[test]
fn failed_runs_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.safetensors");
    // Non-integer counts with --strict: the error comes mid-stream, after the writer started.
    let o = aido()
        .args(["tokenize", "--strict", "--input"])
        .arg(testdata_path("data/sciplex3.h5ad"))
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("non-integer count"));
    // An all-zero cell (dense CSV input) without --skip-empty; with it, the cell is dropped.
    let csv = dir.path().join("in").join("m.csv");
    std::fs::create_dir(csv.parent().unwrap()).unwrap();
    std::fs::write(&csv, "cell,A1BG,A1CF\nc0,1,2\nc1,0,0\nc2,3,0\n").unwrap();
    let o = aido()
        .args(["tokenize", "--min-overlap-genes", "1", "--input"])
        .arg(&csv)
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 cell(s)") && err.contains("'c1'") && err.contains("--skip-empty"),
        "{err}"
    );
    assert!(!out.exists());
    let skipped = dir.path().join("in").join("skip.safetensors");
    let o = aido()
        .args(["tokenize", "--skip-empty", "--input"])
        .arg(&csv)
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(&skipped)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = load(&skipped);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("values").unwrap().shape(), &[2, 19_266]);
    std::fs::remove_dir_all(dir.path().join("in")).unwrap();
    let o = aido()
        .args([
            "tokenize",
            "--input",
            "/no/such.h5ad",
            "--genes",
            "/no/genes.tsv",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!out.exists());
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(files.is_empty(), "left behind: {files:?}");
}

#[test]
fn simulate_writes_h5ad_and_panel_that_tokenize_reads() {
    let dir = tempfile::tempdir().unwrap();
    let h5ad = dir.path().join("s.h5ad");
    let panel = dir.path().join("genes.tsv");
    let ok = aido()
        .args([
            "simulate",
            "--cells",
            "40",
            "--genes",
            "120",
            "--cell-types",
            "4",
            "--seed",
            "3",
            "--output",
        ])
        .arg(&h5ad)
        .arg("--panel-out")
        .arg(&panel)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = dir.path().join("t.safetensors");
    let o = aido()
        .args(["tokenize", "--strict", "--input"])
        .arg(&h5ad)
        .arg("--genes")
        .arg(&panel)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = load(&out);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("values").unwrap().shape(), &[40, 122]);
    // Over the real vocabulary: a subset of its genes, which aligns fully.
    let h5ad2 = dir.path().join("v.h5ad");
    let ok = aido()
        .args([
            "simulate",
            "--cells",
            "10",
            "--genes",
            "3000",
            "--cell-types",
            "2",
            "--seed",
            "1",
            "--output",
        ])
        .arg(&h5ad2)
        .arg("--vocabulary")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .status()
        .unwrap();
    assert!(ok.success());
    let o = aido()
        .args(["tokenize", "--input"])
        .arg(&h5ad2)
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(dir.path().join("v.safetensors"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("3000 matched"));
}

#[test]
fn demo_runs_without_any_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = aido()
        .args(["demo", "--cells", "60", "--genes", "300", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("obsm/X_aido_cell [60 × 64]"), "{stdout}");
    let h5 = aido::tokenize::h5::H5::open(&dir.path().join("demo_embeddings.h5ad")).unwrap();
    let emb = h5.read_f32_rows("obsm/X_aido_cell", 0, 60, 64).unwrap();
    assert!(emb.iter().all(|v| v.is_finite()));
    // Different cells get different embeddings.
    assert!(emb[..64].iter().zip(&emb[64..128]).any(|(a, b)| a != b));
    // The embeddings file is the simulated file plus the embeddings.
    let obs = aido::tokenize::h5ad::read_obs(&dir.path().join("demo_embeddings.h5ad")).unwrap();
    assert!(obs.column("cell_type").is_some() && obs.column("batch").is_some());
    // Both clusterings ran, with reports, UMAP pictures and the clusters in the files.
    assert!(
        stdout.contains("AIDO.Cell embedding") && stdout.contains("expression baseline"),
        "{stdout}"
    );
    for tag in ["embedding", "expression"] {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("demo_{tag}_report.json"))).unwrap(),
        )
        .unwrap();
        assert!(
            r["ari"].as_f64().is_some() && r["nmi"].as_f64().is_some(),
            "{r}"
        );
        assert!(dir.path().join(format!("demo_{tag}_umap.png")).is_file());
        let obs =
            aido::tokenize::h5ad::read_obs(&dir.path().join(format!("demo_{tag}_clusters.h5ad")))
                .unwrap();
        assert!(obs.column("aido_leiden").is_some());
    }
}

/// Normalized input is refused by default (before, it only warned and ran with a wrong
/// meaning), the error says what the data looks like and points to --layer and
/// --allow-non-integer, which is the explicit way through.
#[test]
fn normalized_input_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let run = |extra: &[&str]| {
        aido()
            .arg("tokenize")
            .args(extra)
            .arg("--input")
            .arg(testdata_path("data/sciplex3.h5ad"))
            .arg("--genes")
            .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("looks normalized")
            && e.contains("--layer")
            && e.contains("--allow-non-integer"),
        "{e}"
    );
    assert!(!out.exists());
    let o = run(&["--allow-non-integer"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("non-integer"));
    assert!(out.is_file());
}

/// Output keys are checked before the compute: a gene symbol holding '/' cannot name an obsm key
/// (before, the whole embedding ran and the write failed at the end).
#[test]
fn embed_checks_output_keys_before_the_compute() {
    use aido::model::{AidoCellConfig, Cpu, save_checkpoint};
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    let cfg = AidoCellConfig::new(3, 8, 1, 2, 16);
    save_checkpoint(&cfg.init::<Cpu>(false, &Default::default()), &cfg, &m).unwrap();
    std::fs::write(
        m.join("genes.tsv"),
        "gene_name\tindex\nA1BG\t0\nHLA/X\t1\nA1CF\t2\n",
    )
    .unwrap();
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, "cell,A1BG,HLA/X,A1CF\nc0,1,2,3\n").unwrap();
    let out = dir.path().join("e.h5ad");
    let o = aido()
        .args([
            "embed",
            "--min-overlap-genes",
            "1",
            "--gene-embeddings",
            "HLA/X",
            "--model",
        ])
        .arg(&m)
        .arg("--input")
        .arg(&csv)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("obsm/'X_aido_gene_HLA/X'") && e.contains("--gene-embeddings"),
        "{e}"
    );
    assert!(!out.exists());
}

/// `aido … | head` closes stdout early: the run still completes its output and exits 0.
#[test]
fn a_closed_stdout_does_not_abort_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.safetensors");
    let mut child = aido()
        .args(["tokenize", "--input"])
        .arg(testdata_path("data/zheng68k.h5ad"))
        .arg("--genes")
        .arg(testdata_path("data/OS_scRNA_gene_index.19264.tsv"))
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.exists());
}

/// `aido pretrain --help` states the defaults a run takes when a flag is left out, and they are
/// `aido_train::TrainConfig::default()`'s (the values the run really uses).
#[test]
fn pretrain_help_states_the_real_defaults() {
    let o = aido().args(["pretrain", "--help"]).output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let d = aido::train::TrainConfig::default();
    for (flag, value) in [
        ("--steps", d.steps.to_string()),
        ("--batch-size", d.batch_size.to_string()),
        ("--grad-accum", d.grad_accum.to_string()),
        ("--lr", d.optim.lr.to_string()),
        ("--seed", d.seed.to_string()),
        ("--val-every", d.val_every.to_string()),
        ("--checkpoint-every", d.checkpoint_every.to_string()),
    ] {
        let at = help
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("{flag} not in the help"));
        let rest = &help[at..];
        let end = rest[2..].find(" --").map_or(rest.len(), |e| e + 2);
        assert!(
            rest[..end].contains(&format!("default {value}")),
            "{flag}: the help says {:?}, the default is {value}",
            &rest[..end]
        );
    }
    // --input is the spelling of every command; --data stays as an alias.
    assert!(help.contains("--input <"), "{help}");
    assert!(
        help.contains("aliases: --data") || help.contains("alias: --data"),
        "{help}"
    );
}

/// `cluster` without --embedding or --expression names both choices.
#[test]
fn cluster_without_a_choice_names_both() {
    let o = aido()
        .args(["cluster", "--input", "x.h5ad", "--output", "y.h5ad"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--embedding") && err.contains("--expression"),
        "{err}"
    );
}

/// An output in a folder that does not exist is refused before anything is computed or
/// read, naming the flag and the folder (it used to fail after embedding every cell).
#[test]
fn outputs_in_missing_folders_are_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing_dir");
    let data = testdata_path("data/zheng68k.h5ad");
    let model = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let cases: Vec<Vec<String>> = vec![
        vec![
            "embed".into(),
            "--model".into(),
            model.display().to_string(),
            "--input".into(),
            data.display().to_string(),
            "--output".into(),
            missing.join("x.h5ad").display().to_string(),
        ],
        vec![
            "tokenize".into(),
            "--input".into(),
            data.display().to_string(),
            "--output".into(),
            missing.join("t.safetensors").display().to_string(),
        ],
        vec![
            "cluster".into(),
            "--input".into(),
            data.display().to_string(),
            "--expression".into(),
            "--output".into(),
            dir.path().join("c.h5ad").display().to_string(),
            "--report".into(),
            missing.join("r.json").display().to_string(),
        ],
    ];
    for (args, flag) in cases.iter().zip(["--output", "--output", "--report"]) {
        let o = aido().args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{flag} "))
                && err.contains("missing_dir does not exist")
                && err.contains("nothing was computed"),
            "{args:?}: {err}"
        );
        // Nothing written: not the cluster output either.
        assert!(!dir.path().join("c.h5ad").exists());
    }
    // A picture under another name than .png is refused (it used to be a PNG named .jpg).
    let o = aido()
        .args(["cluster", "--input"])
        .arg(&data)
        .args(["--expression", "--output"])
        .arg(dir.path().join("c.h5ad"))
        .args(["--umap-png"])
        .arg(dir.path().join("u.jpg"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--umap-png") && err.contains(".png"), "{err}");
    assert!(!dir.path().join("c.h5ad").exists());
}

/// SIGTERM (as Ctrl-C) during `embed … --output x.safetensors` leaves no hidden temporary file
/// behind, and a later run removes one left by a process that no longer exists.
#[cfg(target_os = "linux")]
#[test]
fn an_interrupted_embed_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    // The 3M model at full context: seconds per cell, so the run is still going when the
    // temporary output appears.
    let mut child = aido()
        .args(["embed", "--quiet", "--batch-size", "1", "--model"])
        .arg(testdata_path("fixtures/aido_cell/aido_cell_3m_random"))
        .arg("--input")
        .arg(testdata_path("data/zheng68k.h5ad"))
        .arg("--output")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = dir
        .path()
        .join(format!(".x.safetensors.tmp-{}", child.id()));
    let t0 = std::time::Instant::now();
    while !tmp.exists() {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the temporary output never appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "embed ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("terminated: 1 unfinished output file removed"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A temporary of the same output from a process that is gone is removed by the next run.
    let stale = dir.path().join(".t.safetensors.tmp-4194303");
    std::fs::write(&stale, b"partial").unwrap();
    let o = aido()
        .args(["tokenize", "--input"])
        .arg(testdata_path("data/zheng68k.h5ad"))
        .arg("--output")
        .arg(dir.path().join("t.safetensors"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(!stale.exists(), "the stale temporary is still there");
}
