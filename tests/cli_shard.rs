//! Sharded embedding (`aido embed --shard I/N`, `aido merge`): shards merged equal the
//! unsharded run's output byte for byte (h5ad input plus obsm, and safetensors), whatever the
//! batch size of each shard; missing, duplicate and mismatched shards are refused.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aido::tokenize::GeneVocab;
use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido::tokenize::shared::testdata_path;
use aido::tokenize::simulate::{SimulationConfig, simulate};

fn aido(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aido"));
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn model() -> PathBuf {
    testdata_path("fixtures/aido_cell/tiny_ln_nobias")
}

/// 50 simulated cells over the fixture's 64 genes.
fn cells(dir: &Path) -> PathBuf {
    let vocab = GeneVocab::from_tsv(model().join("genes.tsv")).unwrap();
    let s = simulate(&SimulationConfig::new(50, 3, 5), vocab.names().to_vec()).unwrap();
    let p = dir.join("cells.h5ad");
    let mut w = H5adWriter::new(s.obs, s.genes);
    w.x = Some(XMatrix::Csr {
        csr: s.counts,
        n_cols: vocab.len(),
    });
    w.write(&p).unwrap();
    p
}

fn embed(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let m = model();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"embed",
        &"--model",
        &m,
        &"--input",
        &input,
        &"--output",
        &out,
    ];
    for e in extra {
        args.push(e);
    }
    aido(&args)
}

#[test]
fn three_shards_merged_equal_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = cells(d);
    let genes = ["--gene-embeddings", "A1BG,A2M"];
    for ext in ["h5ad", "safetensors"] {
        let whole = d.join(format!("whole.{ext}"));
        ok(&embed(&input, &whole, &genes));
        let mut shards = Vec::new();
        for (i, bs) in [(0, "8"), (1, "3"), (2, "16")] {
            let s = d.join(format!("shard{i}.{ext}.safetensors"));
            let shard = format!("{i}/3");
            let mut extra = genes.to_vec();
            extra.extend(["--shard", &shard, "--batch-size", bs]);
            ok(&embed(&input, &s, &extra));
            shards.push(s);
        }
        let merged = d.join(format!("merged.{ext}"));
        // Any order of the shard files.
        ok(&aido(&[
            &"merge",
            &"--output",
            &merged,
            &shards[2],
            &shards[0],
            &shards[1],
        ]));
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&merged).unwrap(),
            "{ext}: merged shards differ from the unsharded output"
        );
    }
    // The shards cover the cells contiguously: 50 cells → 16, 17, 17.
    let st = std::fs::read(d.join("shard1.h5ad.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&st).unwrap();
    let m = meta.metadata().clone().unwrap();
    assert_eq!(
        (m["shard_start"].as_str(), m["shard_end"].as_str()),
        ("16", "33")
    );
}

#[test]
fn missing_duplicate_and_foreign_shards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = cells(d);
    let shard = |i: usize, n: usize, extra: &[&str]| {
        let p = d.join(format!("s{i}of{n}{}.safetensors", extra.len()));
        let spec = format!("{i}/{n}");
        let mut e = vec!["--shard", spec.as_str()];
        e.extend(extra);
        ok(&embed(&input, &p, &e));
        p
    };
    let (a, b) = (shard(0, 2, &[]), shard(1, 2, &[]));
    let other = shard(1, 2, &["--pooling", "max"]);
    let three = shard(1, 3, &[]);
    let out = d.join("out.h5ad");
    let refused = |args: &[&dyn AsRef<std::ffi::OsStr>], want: &str| {
        let o = aido(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && err.contains(want), "{want}: {err}");
        assert!(!out.exists());
    };
    refused(&[&"merge", &"--output", &out, &a], "missing shard(s) 1/2");
    refused(
        &[&"merge", &"--output", &out, &a, &a, &b],
        "are both shard 0/2",
    );
    refused(
        &[&"merge", &"--output", &out, &a, &other],
        "differ in 'pooling'",
    );
    refused(&[&"merge", &"--output", &out, &a, &three], "not one run");
    refused(
        &[&"merge", &"--output", &out, &input],
        "not a safetensors file",
    );
    // A shard must be written as .safetensors, and I < N.
    let o = embed(&input, &d.join("x.h5ad"), &["--shard", "0/2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--shard writes a .safetensors shard"));
    let o = embed(&input, &d.join("x.safetensors"), &["--shard", "2/2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 ≤ I < N"));
    ok(&aido(&[&"merge", &"--output", &out, &b, &a]));
}
