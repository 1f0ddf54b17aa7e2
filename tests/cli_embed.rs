//! `aido embed` end to end, against the outputs of the authors' PyTorch code stored in the
//! parity fixtures (`testdata/fixtures/aido_cell/*/cases.safetensors`, see its README):
//! raw counts in, `cell_embedding_mean` / `last_hidden_state` out.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aido::tokenize::h5::H5;
use aido::tokenize::shared::testdata_path;

fn aido() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aido"))
}

fn fixture(case: &str) -> PathBuf {
    testdata_path(&format!("fixtures/aido_cell/{case}"))
}

/// `(shape, values)` of an f32 tensor.
fn tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

/// The fixture's raw counts as a dense CSV with the fixture's 64 gene names as the header.
fn counts_csv(case: &str, dir: &Path) -> PathBuf {
    let genes = std::fs::read_to_string(fixture(case).join("genes.tsv")).unwrap();
    let names: Vec<&str> = genes
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let (shape, counts) = tensor(&fixture(case).join("cases.safetensors"), "counts");
    assert_eq!(shape[1], names.len());
    let mut csv = format!("cell,{}\n", names.join(","));
    for (i, row) in counts.chunks(shape[1]).enumerate() {
        let vals: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        csv.push_str(&format!("c{i},{}\n", vals.join(",")));
    }
    let p = dir.join("counts.csv");
    std::fs::write(&p, csv).unwrap();
    p
}

/// `aido ARGS EXTRA…` on the device under test (see [`embed`]): a test comparing two runs
/// compares them on one backend.
fn run(args: &[&str], extra: &[&Path]) -> Output {
    let mut c = aido();
    c.args(args);
    for p in extra {
        c.arg(p);
    }
    if let Ok(d) = std::env::var("AIDO_TEST_DEVICE")
        && !args.contains(&"--device")
    {
        c.args(["--device", &d]);
    }
    c.output().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `aido embed` on a fixture's counts. The device is `cpu` unless `AIDO_TEST_DEVICE` names
/// another one the binary was built with (e.g. `AIDO_TEST_DEVICE=wgpu cargo test --release
/// --features wgpu --test cli_embed` on Mesa's software Vulkan), so the same reference checks
/// run on every backend.
fn embed(case: &str, dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let input = counts_csv(case, dir);
    let mut c = aido();
    c.arg("embed")
        .arg("--model")
        .arg(fixture(case))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(out)
        .args(extra);
    if let Ok(d) = std::env::var("AIDO_TEST_DEVICE")
        && !extra.contains(&"--device")
    {
        c.args(["--device", &d]);
    }
    c.output().unwrap()
}

#[test]
fn embed_tiny_checkpoints_match_the_reference() {
    for case in ["tiny_ln_nobias", "tiny_rms_bias"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("e.safetensors");
        // Genes 3 and 40 of the fixture vocabulary, selected by name.
        let genes = std::fs::read_to_string(fixture(case).join("genes.tsv")).unwrap();
        let names: Vec<&str> = genes
            .lines()
            .skip(1)
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        let sel = format!("{},{}", names[3], names[40]);
        let o = embed(
            case,
            dir.path(),
            &out,
            &["--batch-size", "3", "--gene-embeddings", &sel],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let cases = fixture(case).join("cases.safetensors");
        let (shape, emb) = tensor(&out, "cell_embedding");
        let (rshape, reference) = tensor(&cases, "cell_embedding_mean");
        assert_eq!(shape, rshape);
        let d = max_diff(&emb, &reference);
        assert!(d <= 1e-5, "{case}: cell_embedding max |Δ| = {d}");
        // Gene embeddings = rows 3 and 40 of the reference last_hidden_state [4, 66, 32].
        let (gshape, ge) = tensor(&out, "gene_embedding");
        assert_eq!(gshape, vec![4, 2, 32]);
        let (_, lhs) = tensor(&cases, "last_hidden_state");
        let want: Vec<f32> = (0..4)
            .flat_map(|c| {
                [3usize, 40]
                    .into_iter()
                    .flat_map(move |p| (0..32).map(move |j| (c, p, j)))
            })
            .map(|(c, p, j)| lhs[(c * 66 + p) * 32 + j])
            .collect();
        let d = max_diff(&ge, &want);
        assert!(d <= 5e-5, "{case}: gene_embedding max |Δ| = {d}");
    }
}

#[test]
fn embed_max_pooling_and_h5ad_output() {
    let case = "tiny_ln_nobias";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.h5ad");
    let o = embed(case, dir.path(), &out, &["--pooling", "max"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let h5 = H5::open(&out).unwrap();
    assert_eq!(h5.shape("obsm/X_aido_cell").unwrap(), vec![4, 32]);
    let emb = h5.read_f32_rows("obsm/X_aido_cell", 0, 4, 32).unwrap();
    // Max over the 64 gene positions of the reference last_hidden_state.
    let (_, lhs) = tensor(
        &fixture(case).join("cases.safetensors"),
        "last_hidden_state",
    );
    let want: Vec<f32> = (0..4)
        .flat_map(|c| (0..32).map(move |j| (c, j)))
        .map(|(c, j)| {
            (0..64)
                .map(|p| lhs[(c * 66 + p) * 32 + j])
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let d = max_diff(&emb, &want);
    assert!(d <= 5e-5, "max pooling max |Δ| = {d}");
    // obs is carried over from the input: one row per cell.
    assert_eq!(h5.shape("obs/_index").unwrap(), vec![4]);
}

#[test]
fn key_added_names_the_obsm_entry_and_a_replacement_is_announced() {
    let case = "tiny_ln_nobias";
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("e.h5ad");
    let o = embed(case, dir.path(), &first, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("replacing"), "{}", stderr(&o));
    // The CSV input became a whole AnnData: embed it again under another key.
    let second = dir.path().join("e2.h5ad");
    let o = run(
        &["embed", "--key-added", "X_again", "--model"],
        &[
            &fixture(case),
            Path::new("--input"),
            &first,
            Path::new("--output"),
            &second,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("replacing"), "{}", stderr(&o));
    assert!(stdout(&o).contains("obsm/X_again"), "{}", stdout(&o));
    let h5 = H5::open(&second).unwrap();
    let a = h5.read_f32_rows("obsm/X_aido_cell", 0, 4, 32).unwrap();
    let b = h5.read_f32_rows("obsm/X_again", 0, 4, 32).unwrap();
    assert_eq!(a, b, "the first embedding is kept and the second equals it");
    // The default key again: the run says which entry it replaces.
    let third = dir.path().join("e3.h5ad");
    let o = run(
        &["embed", "--model"],
        &[
            &fixture(case),
            Path::new("--input"),
            &first,
            Path::new("--output"),
            &third,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("replacing obsm/X_aido_cell") && stderr(&o).contains("--key-added"),
        "{}",
        stderr(&o)
    );
    // A key for a safetensors output, or a key with '/', is refused before anything runs.
    for (key, out, needle) in [
        ("X_a", dir.path().join("e.safetensors"), "safetensors"),
        ("a/b", dir.path().join("e4.h5ad"), "no '/'"),
    ] {
        let o = run(
            &["embed", "--key-added", key, "--model"],
            &[
                &fixture(case),
                Path::new("--input"),
                &first,
                Path::new("--output"),
                &out,
            ],
        );
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("--key-added") && stderr(&o).contains(needle),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists());
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn embed_errors_are_clear_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = counts_csv("tiny_ln_nobias", dir.path());
    let out = dir.path().join("e.safetensors");
    // A checkpoint folder without genes.tsv, no --genes, and not a 19,266-position model (for
    // those the built-in AIDO.Cell list applies: the released checkpoints carry none).
    let no_genes = dir.path().join("no_genes");
    std::fs::create_dir(&no_genes).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_ln_nobias").join(f), no_genes.join(f)).unwrap();
    }
    let o = run(
        &["embed", "--model"],
        &[
            &no_genes,
            Path::new("--input"),
            &input,
            Path::new("--output"),
            &out,
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--genes GENES.tsv"), "{}", stderr(&o));
    // A gene list whose length disagrees with the checkpoint.
    let o = run(
        &["embed", "--model"],
        &[
            &fixture("tiny_ln_nobias"),
            Path::new("--genes"),
            &testdata_path("data/OS_scRNA_gene_index.19264.tsv"),
            Path::new("--input"),
            &input,
            Path::new("--output"),
            &out,
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("19264 genes"), "{}", stderr(&o));
    // An unknown gene.
    let o = embed(
        "tiny_ln_nobias",
        dir.path(),
        &out,
        &["--gene-embeddings", "NOT_A_GENE"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("'NOT_A_GENE'"), "{}", stderr(&o));
    // A format we do not write.
    let bad = dir.path().join("e.csv");
    let o = embed("tiny_ln_nobias", dir.path(), &bad, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(".h5ad or .safetensors"),
        "{}",
        stderr(&o)
    );
    // A backend this build lacks (the default build has CPU only).
    if !cfg!(feature = "cuda") {
        let o = embed("tiny_ln_nobias", dir.path(), &out, &["--device", "cuda"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
    }
    assert!(!out.exists() && !bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "counts.csv" && n != "no_genes")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `‖a − b‖₂ / ‖b‖₂`.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// `--precision bf16` (mixed precision). On a backend with bf16 arithmetic (cpu) the cell
/// embeddings track the authors' f32 outputs (`cell_embedding_mean`) within 1e-2 relative —
/// the bf16 bound of the GPU issue — without being the f32 numbers, and the output records the
/// precision. On wgpu (WGSL has no bf16; cubecl registers it for conversion only) the run is
/// refused by name before any output exists.
#[test]
fn embed_in_bf16_tracks_the_reference_or_is_refused() {
    let case = "tiny_rms_bias";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.safetensors");
    let o = embed(case, dir.path(), &out, &["--precision", "bf16"]);
    if std::env::var("AIDO_TEST_DEVICE").as_deref() == Ok("wgpu") {
        assert!(!o.status.success(), "bf16 on wgpu ran");
        assert!(
            stderr(&o).contains("cannot compute in bf16"),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists(), "an output was written");
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, emb) = tensor(&out, "cell_embedding");
    let (_, reference) = tensor(
        &fixture(case).join("cases.safetensors"),
        "cell_embedding_mean",
    );
    let e = rel_err(&emb, &reference);
    assert!(e <= 1e-2, "bf16 cell embeddings: relative error {e}");
    assert!(e > 1e-4, "bf16 gave the f32 numbers (relative error {e})");
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("precision"))
            .map(String::as_str),
        Some("bf16")
    );
    // An unknown precision is a usage error naming the choices.
    let o = embed(
        case,
        dir.path(),
        &dir.path().join("x.safetensors"),
        &["--precision", "fp16"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("f32 or bf16"), "{}", stderr(&o));
}
