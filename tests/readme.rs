//! The README's library snippet is real: README.md shows exactly the code of
//! `examples/readme_library.rs` between its `README:` markers, and that program (built by
//! `cargo test` with the other examples) embeds a file with a fixture checkpoint from the
//! authors' code (`testdata/fixtures/aido_cell/tiny_ln_nobias`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aido::tokenize::GeneVocab;
use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido::tokenize::shared::testdata_path;
use aido::tokenize::simulate::{SimulationConfig, simulate};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn readme_shows_the_compiled_example() {
    let ex = std::fs::read_to_string(root().join("examples/readme_library.rs")).unwrap();
    let start = ex.find("// README: library\n").unwrap() + "// README: library\n".len();
    let end = ex.find("// README: end").unwrap();
    let code = &ex[start..end];
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```rust\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert!(
        blocks.contains(&code),
        "README.md's rust blocks differ from examples/readme_library.rs; copy the marked lines"
    );
}

/// `target/<profile>/examples/NAME`, next to this test's `deps/` folder.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds the examples; build it with `cargo build --release --example {name}`",
        bin.display()
    );
    bin
}

#[test]
fn readme_example_embeds_a_file() {
    let model = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let genes = model.join("genes.tsv");
    let vocab = GeneVocab::from_tsv(&genes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cells = dir.path().join("cells.h5ad");
    let sim = simulate(&SimulationConfig::new(20, 3, 1), vocab.names().to_vec()).unwrap();
    let n = vocab.len();
    let mut w = H5adWriter::new(sim.obs, sim.genes);
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols: n,
    });
    w.write(&cells).unwrap();
    let out = dir.path().join("out.h5ad");
    let o = Command::new(example_binary("readme_library"))
        .arg(&model)
        .arg(&cells)
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains(&format!("{n} matched of {n} vocabulary genes")),
        "{stdout}"
    );
    // 20 cells, hidden size 32 (the fixture's config.json); then 2 cells in memory.
    assert!(
        stdout.contains("20 cells → obsm/X_aido_cell [20 × 32]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("in memory: (2, 32) cell embeddings"),
        "{stdout}"
    );
    let h5 = aido::tokenize::h5::H5::open(&out).unwrap();
    assert_eq!(h5.shape("obsm/X_aido_cell").unwrap(), vec![20, 32]);
}

/// `examples/annotate_file.rs`, the short path for a Rust tool: fine-tune on one file's labels,
/// annotate another, print the macro-F1 last. Its `main` stays within 40 lines.
#[test]
fn annotate_file_example_fine_tunes_predicts_and_scores() {
    let src = std::fs::read_to_string(root().join("examples/annotate_file.rs")).unwrap();
    let main = &src[src.find("fn main()").unwrap()..];
    let lines = main[..main.find("\n}\n").unwrap()].lines().count() + 1;
    assert!(lines <= 40, "annotate_file's main has {lines} lines");
    let model = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let vocab = GeneVocab::from_tsv(model.join("genes.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, seed: u64| {
        let p = dir.path().join(name);
        let sim = simulate(&SimulationConfig::new(60, 3, seed), vocab.names().to_vec()).unwrap();
        let mut w = H5adWriter::new(sim.obs, sim.genes);
        w.x = Some(XMatrix::Csr {
            csr: sim.counts,
            n_cols: vocab.len(),
        });
        w.write(&p).unwrap();
        p
    };
    let (train, test) = (write("train.h5ad", 1), write("test.h5ad", 2));
    let out = dir.path().join("annotated.h5ad");
    let o = Command::new(example_binary("annotate_file"))
        .arg(&model)
        .arg(&train)
        .arg(&test)
        .arg("cell_type")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last = stdout.lines().last().unwrap();
    let f1: f64 = last.strip_prefix("macro-F1 ").unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&f1), "{last}");
    // OUT is TEST plus the predictions; the run is kept beside it.
    let obs = aido::tokenize::h5ad::read_obs(&out).unwrap();
    assert!(obs.column("cell_type").is_some() && obs.column("aido_cell_type").is_some());
    assert!(
        dir.path()
            .join("annotated.finetune/classifier/classifier.json")
            .is_file()
    );
    // The printed macro-F1 is the one `aido evaluate` computes on OUT.
    let report = dir.path().join("eval.json");
    let e = Command::new(env!("CARGO_BIN_EXE_aido"))
        .args([
            "evaluate",
            "--label-column",
            "cell_type",
            "--prediction-column",
            "aido_cell_type",
            "--input",
        ])
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        format!("{:.4}", r["macro_f1"].as_f64().unwrap()),
        format!("{f1:.4}")
    );
}
