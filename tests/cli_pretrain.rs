//! `aido pretrain` from outside: a run killed with SIGKILL and resumed logs the same losses as
//! the uninterrupted run; its output folder is a checkpoint `aido embed` loads; bad states stop
//! the run with a clear message.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aido::train::{StepMetrics, read_metrics};

fn aido() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aido"))
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A simulated raw-count file (300 cells × 400 genes) and its gene list.
fn simulated(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, genes) = (dir.join("sim.h5ad"), dir.join("genes.tsv"));
    run_ok(
        aido()
            .args([
                "simulate",
                "--cells",
                "300",
                "--genes",
                "400",
                "--cell-types",
                "4",
                "--seed",
                "3",
                "--output",
            ])
            .arg(&data)
            .arg("--panel-out")
            .arg(&genes),
    );
    (data, genes)
}

/// `aido pretrain --data DATA --genes GENES` with the test's flags; `extra` flags replace the
/// defaults of the same name.
fn pretrain(data: &Path, genes: &Path, out: &Path, extra: &[&str]) -> Command {
    let input = [
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--genes"),
        genes.as_os_str(),
    ];
    pretrain_from(&input, out, extra)
}

/// `aido pretrain` reading `input` (e.g. `--corpus DIR`), otherwise as [`pretrain`].
fn pretrain_from(input: &[&OsStr], out: &Path, extra: &[&str]) -> Command {
    let defaults = [
        ("--preset", "tiny"),
        ("--steps", "40"),
        ("--batch-size", "8"),
        ("--lr", "1e-3"),
        ("--seed", "5"),
        ("--val-every", "10"),
        ("--checkpoint-every", "5"),
    ];
    let mut c = aido();
    c.arg("pretrain")
        .args(input)
        .arg("--out")
        .arg(out)
        .arg("--quiet");
    for (k, v) in defaults {
        if !extra.contains(&k) {
            c.args([k, v]);
        }
    }
    c.args(extra);
    // The backend under test: cpu unless AIDO_TEST_DEVICE names another one this build has
    // (a test that names its device keeps it).
    if let Ok(d) = std::env::var("AIDO_TEST_DEVICE")
        && !extra.contains(&"--device")
    {
        c.args(["--device", &d]);
    }
    c
}

fn last_step(metrics: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("step").and_then(serde_json::Value::as_u64))
        .max()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-3)
}

#[test]
fn sigkill_then_resume_logs_the_uninterrupted_losses() {
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());

    // The uninterrupted run.
    let full = dir.path().join("full");
    run_ok(&mut pretrain(&data, &genes, &full, &[]));
    let want = read_metrics(&full.join("metrics.jsonl")).unwrap();
    assert_eq!(want.len(), 41, "one line per update plus step 0");
    assert_eq!(want[0].step, 0);
    assert!(
        want[0].val_loss.is_some(),
        "validation before the first update"
    );
    assert!(want.iter().filter(|m| m.val_loss.is_some()).count() == 5);

    // The same run, killed with SIGKILL part-way (after its checkpoint at update 10).
    let cut = dir.path().join("cut");
    let mut child = pretrain(&data, &genes, &cut, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        if last_step(&cut.join("metrics.jsonl")).is_some_and(|s| s >= 12) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let killed_at = last_step(&cut.join("metrics.jsonl")).unwrap();
    assert!(killed_at < 40, "killed at update {killed_at}");
    let latest = std::fs::read_to_string(cut.join("checkpoints/latest")).unwrap();
    assert!(latest.starts_with("step-"), "{latest}");

    // Resumed with the same flags.
    let stdout = run_ok(&mut pretrain(&data, &genes, &cut, &["--resume"]));
    assert!(stdout.contains("done: 40 updates"), "{stdout}");
    let got = read_metrics(&cut.join("metrics.jsonl")).unwrap();
    assert_eq!(
        got.iter().map(|m| m.step).collect::<Vec<_>>(),
        want.iter().map(|m| m.step).collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        let StepMetrics {
            step,
            train_loss,
            val_loss,
            lr,
            cells_seen,
            ..
        } = w;
        assert!(
            close(g.train_loss, *train_loss),
            "update {step}: train loss {} vs {train_loss} (killed at {killed_at})",
            g.train_loss
        );
        match (g.val_loss, val_loss) {
            (Some(a), Some(b)) => assert!(close(a, *b), "update {step}: val {a} vs {b}"),
            (None, None) => {}
            other => panic!("update {step}: validation {other:?}"),
        }
        assert_eq!(g.lr, *lr);
        assert_eq!(g.cells_seen, *cells_seen);
    }

    // The output folder is a checkpoint `aido embed` reads (gene list from OUT/genes.tsv).
    let emb = dir.path().join("emb.safetensors");
    run_ok(
        aido()
            .args(["embed", "--model"])
            .arg(&cut)
            .arg("--input")
            .arg(&data)
            .arg("--output")
            .arg(&emb),
    );
    let bytes = std::fs::read(&emb).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("cell_embedding").unwrap().shape(), &[300, 64]);
}

#[test]
fn runs_refuse_to_overwrite_or_to_resume_with_other_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let out = dir.path().join("run");
    run_ok(&mut pretrain(&data, &genes, &out, &["--steps", "3"]));
    // A second fresh start into the same folder is refused.
    let o = pretrain(&data, &genes, &out, &["--steps", "3"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resume"), "{err}");
    // Resuming with a different configuration is refused, naming the saved state.
    let o = pretrain(
        &data,
        &genes,
        &out,
        &["--steps", "3", "--resume", "--lr", "5e-4"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("state.json") && err.contains("different configuration"),
        "{err}"
    );
}

#[test]
fn a_diverging_run_stops_naming_the_update_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let out = dir.path().join("run");
    // An absurd learning rate: AdamW's first update moves every weight by ~1e30.
    let o = pretrain(
        &data,
        &genes,
        &out,
        &["--lr", "1e30", "--checkpoint-every", "1", "--steps", "10"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("non-finite"), "{err}");
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert!(
        err.contains(&format!(
            "last good checkpoint is {}",
            out.join("checkpoints").join(latest.trim()).display()
        )),
        "{err}"
    );
    // Nothing after the last good state was logged as if it were fine.
    let m = read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert!(m.iter().all(|m| m.train_loss.is_finite()));
}

#[test]
fn data_parallel_run_logs_the_losses_of_the_accumulated_single_device_run() {
    // Two peers through burn's collective all-reduce (on the one CPU device) against one device
    // accumulating the same two micro-batches per update.
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let flags = [
        "--steps",
        "6",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--device",
        "cpu",
    ];
    run_ok(&mut pretrain(&data, &genes, &one, &flags));
    let mut f2 = flags.to_vec();
    f2.extend(["--data-parallel", "2"]);
    run_ok(&mut pretrain(&data, &genes, &two, &f2));
    let (a, b) = (
        read_metrics(&one.join("metrics.jsonl")).unwrap(),
        read_metrics(&two.join("metrics.jsonl")).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x.train_loss - y.train_loss).abs() <= 1e-4 * x.train_loss.abs(),
            "update {}: {} vs {}",
            x.step,
            x.train_loss,
            y.train_loss
        );
    }
    // A peer count above the micro-batches per update is refused up front.
    let o = pretrain(
        &data,
        &genes,
        &dir.path().join("bad"),
        &["--data-parallel", "2"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("data_parallel"));
}

#[test]
fn normalized_input_is_refused_naming_the_value() {
    // sci-Plex3 in testdata/data is log-normalized (DATA.md): binomial thinning needs raw counts.
    let dir = tempfile::tempdir().unwrap();
    let o = aido()
        .arg("pretrain")
        .arg("--data")
        .arg(aido::tokenize::shared::testdata_path("data/sciplex3.h5ad"))
        .arg("--genes")
        .arg(aido::tokenize::shared::testdata_path(
            "data/OS_scRNA_gene_index.19264.tsv",
        ))
        .arg("--out")
        .arg(dir.path().join("run"))
        .args(["--steps", "2", "--quiet"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sciplex3.h5ad")
            && err.contains("non-integer count")
            && err.contains("raw counts"),
        "{err}"
    );
    assert!(!dir.path().join("run").join("metrics.jsonl").exists());
}

/// `aido pretrain --layer counts` reads raw counts kept in a layer when X is log-normalized
/// (before, pretrain had no --layer: such a file could not be pretrained on).
#[test]
fn pretrain_reads_counts_from_a_layer() {
    use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
    use aido::tokenize::{ReadOptions, open_source, read_all};
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let mut src = open_source(&data, &ReadOptions::default()).unwrap();
    let names = src.gene_names().to_vec();
    let obs = src.obs().clone();
    let counts = read_all(src.as_mut()).unwrap();
    let mut lognorm = counts.clone();
    for c in 0..counts.n_cells() {
        let (a, b) = (counts.indptr[c], counts.indptr[c + 1]);
        let total: f32 = counts.data[a..b].iter().sum();
        for v in &mut lognorm.data[a..b] {
            *v = (*v / total * 1e4).ln_1p();
        }
    }
    let g = names.len();
    let mut w = H5adWriter::new(obs, names);
    w.x = Some(XMatrix::Csr {
        csr: lognorm,
        n_cols: g,
    });
    w.layers = vec![(
        "counts".into(),
        XMatrix::Csr {
            csr: counts,
            n_cols: g,
        },
    )];
    let file = dir.path().join("layered.h5ad");
    w.write(&file).unwrap();
    let o = pretrain(&file, &genes, &dir.path().join("x"), &["--steps", "2"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("non-integer"));
    run_ok(&mut pretrain(
        &file,
        &genes,
        &dir.path().join("y"),
        &["--steps", "2", "--layer", "counts"],
    ));
    assert!(dir.path().join("y/model.safetensors").is_file());
}

/// The metrics of two runs agree update for update (losses within [`close`]).
fn same_metrics(a: &[StepMetrics], b: &[StepMetrics], what: &str) {
    assert_eq!(
        a.iter().map(|m| m.step).collect::<Vec<_>>(),
        b.iter().map(|m| m.step).collect::<Vec<_>>(),
        "{what}"
    );
    for (x, y) in a.iter().zip(b) {
        assert!(
            close(x.train_loss, y.train_loss),
            "{what}, update {}: train loss {} vs {}",
            x.step,
            x.train_loss,
            y.train_loss
        );
        match (x.val_loss, y.val_loss) {
            (Some(p), Some(q)) => assert!(close(p, q), "{what}, update {}: val {p} vs {q}", x.step),
            (None, None) => {}
            other => panic!("{what}, update {}: validation {other:?}", x.step),
        }
        assert_eq!(x.cells_seen, y.cells_seen, "{what}");
    }
}

#[test]
fn a_packed_corpus_trains_as_its_files_do_and_resumes_mid_epoch_exactly() {
    // Expectation: the in-memory `--data` run on the same file (same split, examples and, with a
    // buffer holding every training cell, the same order), and the uninterrupted streamed run.
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let corpus = dir.path().join("corpus");
    let stdout = run_ok(
        aido()
            .args(["pack", "--data"])
            .arg(&data)
            .arg("--genes")
            .arg(&genes)
            .arg("--out")
            .arg(&corpus)
            .args(["--cells-per-shard", "37"]),
    );
    assert!(stdout.contains("packed 300 cells"), "{stdout}");
    let input = [OsStr::new("--corpus"), corpus.as_os_str()];
    let flags = [
        "--steps",
        "12",
        "--val-every",
        "4",
        "--checkpoint-every",
        "4",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        flags.iter().chain(extra).copied().collect()
    };

    let mem = dir.path().join("mem");
    run_ok(&mut pretrain(&data, &genes, &mem, &flags));
    let streamed = dir.path().join("streamed");
    run_ok(&mut pretrain_from(
        &input,
        &streamed,
        &with(&["--shuffle-buffer", "100000"]),
    ));
    let want = read_metrics(&mem.join("metrics.jsonl")).unwrap();
    same_metrics(
        &want,
        &read_metrics(&streamed.join("metrics.jsonl")).unwrap(),
        "--corpus with a full buffer vs --data",
    );
    assert_eq!(
        std::fs::read_to_string(mem.join("baselines.json")).unwrap(),
        std::fs::read_to_string(streamed.join("baselines.json")).unwrap()
    );

    // A buffer of 50 cells: another order (the same validation), and a run stopped after its
    // checkpoint at update 8 (cell 64 of a 285-cell epoch, mid-window) resumes it exactly.
    let small = dir.path().join("small");
    run_ok(&mut pretrain_from(
        &input,
        &small,
        &with(&["--shuffle-buffer", "50"]),
    ));
    let full = read_metrics(&small.join("metrics.jsonl")).unwrap();
    // The validation cells do not depend on the buffer: their baseline losses are identical.
    // (The validation *loss* follows the trained weights, which the order changes.)
    assert_eq!(
        std::fs::read_to_string(mem.join("baselines.json")).unwrap(),
        std::fs::read_to_string(small.join("baselines.json")).unwrap(),
        "same validation cells"
    );
    assert!(
        want.iter()
            .zip(&full)
            .any(|(a, b)| !close(a.train_loss, b.train_loss)),
        "a 50-cell buffer gives another order"
    );
    let cut = dir.path().join("cut");
    std::fs::create_dir_all(cut.join("checkpoints")).unwrap();
    for f in [
        "metrics.jsonl",
        "train_config.json",
        "genes.tsv",
        "baselines.json",
    ] {
        std::fs::copy(small.join(f), cut.join(f)).unwrap();
    }
    copy_dir(
        &small.join("checkpoints/step-00000008"),
        &cut.join("checkpoints/step-00000008"),
    );
    std::fs::write(cut.join("checkpoints/latest"), "step-00000008").unwrap();
    let stdout = run_ok(&mut pretrain_from(
        &input,
        &cut,
        &with(&["--shuffle-buffer", "50", "--resume"]),
    ));
    assert!(stdout.contains("done: 12 updates"), "{stdout}");
    same_metrics(
        &full,
        &read_metrics(&cut.join("metrics.jsonl")).unwrap(),
        "resumed at update 8 vs uninterrupted",
    );

    // --genes must be the corpus' panel; --layer belongs to `aido pack`.
    let other = dir.path().join("other_genes.tsv");
    let text = std::fs::read_to_string(&genes).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.truncate(lines.len() - 1);
    std::fs::write(&other, lines.join("\n") + "\n").unwrap();
    let o = pretrain_from(
        &[
            OsStr::new("--corpus"),
            corpus.as_os_str(),
            OsStr::new("--genes"),
            other.as_os_str(),
        ],
        &dir.path().join("bad"),
        &flags,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("is not the panel of corpus"),
        "{err}"
    );
    let o = pretrain_from(&input, &dir.path().join("bad2"), &["--layer", "counts"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `--precision bf16`: mixed-precision pretraining (bf16 projections, f32 master weights,
/// AdamW state, norms and loss). On cpu its losses follow the f32 run's closely without being
/// them (the expectation: the f32 run of the same seed, itself checked by the other tests),
/// the precision is part of the run's configuration, and a resume at another precision is
/// refused. On wgpu (no bf16 arithmetic) the run is refused by name.
#[test]
fn bf16_pretraining_follows_the_f32_losses_and_is_part_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let flags = [
        "--steps",
        "6",
        "--val-every",
        "3",
        "--checkpoint-every",
        "3",
    ];
    let low = dir.path().join("bf16");
    let mut c = pretrain(
        &data,
        &genes,
        &low,
        &[&flags[..], &["--precision", "bf16"]].concat(),
    );
    if std::env::var("AIDO_TEST_DEVICE").as_deref() == Ok("wgpu") {
        let o = c.output().unwrap();
        assert!(!o.status.success(), "bf16 on wgpu ran");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("cannot compute in bf16"), "{err}");
        return;
    }
    run_ok(&mut c);
    let full = dir.path().join("f32");
    run_ok(&mut pretrain(&data, &genes, &full, &flags));
    let a = read_metrics(&low.join("metrics.jsonl")).unwrap();
    let b = read_metrics(&full.join("metrics.jsonl")).unwrap();
    assert_eq!(a.len(), b.len());
    let mut differs = false;
    for (x, y) in a.iter().zip(&b) {
        assert!(x.train_loss.is_finite());
        let rel = (x.train_loss - y.train_loss).abs() / y.train_loss.abs();
        assert!(
            rel <= 2e-2,
            "update {}: bf16 loss {} vs f32 {}",
            x.step,
            x.train_loss,
            y.train_loss
        );
        differs |= rel > 1e-6;
    }
    assert!(differs, "the bf16 run logged the f32 losses");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(low.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["precision"], "bf16");
    // The checkpoint is f32 (master weights) and embeds as any other.
    let st = std::fs::read(low.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert!(
        st.tensors()
            .iter()
            .all(|(_, t)| t.dtype() == safetensors::Dtype::F32)
    );
    // Resuming at another precision contradicts the saved run.
    let o = pretrain(
        &data,
        &genes,
        &low,
        &["--steps", "8", "--precision", "f32", "--resume"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success(), "resumed a bf16 run in f32");
}
