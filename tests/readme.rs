//! The README's library snippet is real: README.md shows exactly the code of
//! `examples/readme_library.rs` between its `README:` markers, and that program (built by
//! `cargo test` with the other examples) embeds a file with a fixture checkpoint from the
//! authors' code (`../shared/fixtures/aido_cell/tiny_ln_nobias`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aido::tokenize::GeneVocab;
use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido::tokenize::shared::shared_path;
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

/// `target/<profile>/examples/readme_library`, next to this test's `deps/` folder.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("readme_library{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds the examples; build it with `cargo build --release --example readme_library`",
        bin.display()
    );
    bin
}

#[test]
fn readme_example_embeds_a_file() {
    let model = shared_path("fixtures/aido_cell/tiny_ln_nobias");
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
    let o = Command::new(example_binary())
        .arg(&model)
        .arg(&genes)
        .arg(&cells)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains(&format!("{n} matched of {n} vocabulary genes")),
        "{stdout}"
    );
    // 20 cells in batches of 8, hidden size 32 (the fixture's config.json).
    assert!(stdout.contains("8 cells → (8, 32)"), "{stdout}");
    assert!(stdout.contains("4 cells → (4, 32)"), "{stdout}");
}
