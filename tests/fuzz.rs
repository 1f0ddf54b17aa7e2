//! Robustness as a test: seeded structured mutations of small valid inputs — h5ad (written by
//! us and by anndata), Cell Ranger HDF5, Matrix Market folders, CSV, and checkpoint folders
//! (`config.json`, `model.safetensors`, `pytorch_model.bin`) — each run through the `aido`
//! binary. For every case: the process exits 0 or with a clean error (exit 1, a message, no
//! "panicked"), never a panic (exit 101), an abort or signal, or a hang; a failed run leaves no
//! output and no temporary file; a successful one leaves its output.
//!
//! The case count per seed file is `AIDO_FUZZ_CASES` (default 40, a few hundred cases in all);
//! `AIDO_FUZZ_SEED` changes the seed. The totals are printed (`--nocapture`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aido::tokenize::GeneVocab;
use aido::tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido::tokenize::shared::testdata_path;
use aido::tokenize::simulate::{SimulationConfig, simulate};

/// SplitMix64: a small, seedable generator for choosing mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of a binary file.
fn mutate_bytes(rng: &mut Rng, mut b: Vec<u8>) -> (Vec<u8>, String) {
    let n = b.len().max(1);
    match rng.below(5) {
        0 => {
            let k = 1 + rng.below(8);
            for _ in 0..k {
                let i = rng.below(n);
                if i < b.len() {
                    b[i] ^= 1 << rng.below(8);
                }
            }
            (b, format!("flip {k} bits"))
        }
        1 => {
            let (i, len) = (rng.below(n), 1 + rng.below(16));
            let fill = [0x00u8, 0xFF, 0x7F, 0x80][rng.below(4)];
            for x in b.iter_mut().skip(i).take(len) {
                *x = fill;
            }
            (b, format!("overwrite {len} bytes at {i} with {fill:#x}"))
        }
        2 => {
            let at = rng.below(n);
            b.truncate(at);
            (b, format!("truncate at {at}"))
        }
        3 => {
            let (i, len) = (rng.below(n), 1 + rng.below(64));
            let chunk: Vec<u8> = b.iter().skip(i).take(len).copied().collect();
            let at = rng.below(n);
            b.splice(at.min(b.len())..at.min(b.len()), chunk);
            (b, format!("insert {len} bytes from {i} at {at}"))
        }
        _ => {
            // An 8-byte little-endian integer somewhere set to a huge or odd value (HDF5 sizes,
            // offsets and the safetensors header length are such fields).
            let i = rng.below(n.saturating_sub(8).max(1));
            let v: u64 = [u64::MAX, 1 << 40, 0, 0x7FFF_FFFF, 3][rng.below(5)];
            for (k, x) in v.to_le_bytes().iter().enumerate() {
                if let Some(y) = b.get_mut(i + k) {
                    *y = *x;
                }
            }
            (b, format!("u64 {v:#x} at {i}"))
        }
    }
}

/// One mutation of a text file: token- and line-level, or a byte mutation.
fn mutate_text(rng: &mut Rng, b: Vec<u8>) -> (Vec<u8>, String) {
    let text = String::from_utf8_lossy(&b).into_owned();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() || rng.below(4) == 0 {
        return mutate_bytes(rng, b);
    }
    let l = rng.below(lines.len());
    let what = match rng.below(4) {
        0 => {
            lines.remove(l);
            format!("delete line {l}")
        }
        1 => {
            let d = lines[l].clone();
            lines.insert(l, d);
            format!("duplicate line {l}")
        }
        _ => {
            let bad = [
                "-1",
                "1e308",
                "NaN",
                "inf",
                "18446744073709551616",
                "99999999999",
                "0",
                "abc",
                "",
                "2.5",
                "\"",
            ][rng.below(11)];
            let mut toks: Vec<String> = lines[l]
                .split([' ', '\t', ','])
                .map(str::to_string)
                .collect();
            let t = rng.below(toks.len());
            toks[t] = bad.to_string();
            let sep = if lines[l].contains('\t') {
                "\t"
            } else if lines[l].contains(',') {
                ","
            } else {
                " "
            };
            lines[l] = toks.join(sep);
            format!("line {l} token {t} -> {bad:?}")
        }
    };
    let mut out = lines.join("\n");
    out.push('\n');
    (out.into_bytes(), what)
}

/// A JSON config mutation: a field removed, or set to a wrong type or an extreme value.
fn mutate_json(rng: &mut Rng, b: Vec<u8>) -> (Vec<u8>, String) {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice::<serde_json::Value>(&b)
    else {
        return mutate_bytes(rng, b);
    };
    if rng.below(5) == 0 {
        return mutate_bytes(rng, b);
    }
    let keys: Vec<String> = m.keys().cloned().collect();
    let k = keys[rng.below(keys.len())].clone();
    let vals = [
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1e300),
        serde_json::json!(u64::MAX),
        serde_json::json!("x"),
        serde_json::json!(null),
        serde_json::json!([1, 2]),
        serde_json::json!(3),
        serde_json::json!(100_000_000),
    ];
    let what = if rng.below(4) == 0 {
        m.remove(&k);
        format!("remove {k}")
    } else {
        let v = vals[rng.below(vals.len())].clone();
        let w = format!("{k} = {v}");
        m.insert(k, v);
        w
    };
    (
        serde_json::to_vec_pretty(&serde_json::Value::Object(m)).unwrap(),
        what,
    )
}

#[derive(Default)]
struct Tally {
    cases: usize,
    ok: usize,
    refused: usize,
    failures: Vec<String>,
}

enum Outcome {
    Ok,
    Refused,
}

/// Runs `aido` with `args`, output to `out` inside `out_dir`, and checks the contract.
fn run_case(args: &[&std::ffi::OsStr], out_dir: &Path, out: &Path) -> Result<Outcome, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aido"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("hang: no exit within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n) != out.file_name().map(Path::new).unwrap())
        .collect();
    if stderr.contains("panicked") {
        return Err(format!("panic: {stderr}"));
    }
    if !leftovers.is_empty() {
        return Err(format!("left behind {leftovers:?}"));
    }
    match status.code() {
        Some(0) if out.exists() => Ok(Outcome::Ok),
        Some(0) => Err("exit 0 without an output".into()),
        Some(1) if out.exists() => Err(format!("refused but wrote {}", out.display())),
        Some(1) if stderr.trim().is_empty() => Err("refused without a message".into()),
        Some(1) => Ok(Outcome::Refused),
        Some(c) => Err(format!("exit {c}: {stderr}")),
        None => Err(format!("killed by a signal (abort?): {stderr}")),
    }
}

fn cases_per_seed() -> usize {
    std::env::var("AIDO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn seed() -> u64 {
    std::env::var("AIDO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_203)
}

type Mutator = fn(&mut Rng, Vec<u8>) -> (Vec<u8>, String);

/// Mutates `victim` (a file inside the copied input `src`, a file or a folder) case after case
/// and runs `command(input, output)`.
fn fuzz_input(
    name: &str,
    src: &Path,
    victim: &str,
    mutate: Mutator,
    command: &dyn Fn(&Path, &Path) -> Vec<std::ffi::OsString>,
    tally: &mut Tally,
    rng: &mut Rng,
) {
    let original = if src.is_dir() {
        std::fs::read(src.join(victim)).unwrap()
    } else {
        std::fs::read(src).unwrap()
    };
    for case in 0..cases_per_seed() {
        let work = tempfile::tempdir().unwrap();
        let input = work.path().join(src.file_name().unwrap());
        if src.is_dir() {
            std::fs::create_dir(&input).unwrap();
            for e in std::fs::read_dir(src).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), input.join(e.file_name())).unwrap();
            }
        }
        let (bytes, what) = mutate(rng, original.clone());
        let target = if src.is_dir() {
            input.join(victim)
        } else {
            input.clone()
        };
        std::fs::write(&target, bytes).unwrap();
        let out_dir = work.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("result.safetensors");
        let args = command(&input, &out);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        tally.cases += 1;
        match run_case(&refs, &out_dir, &out) {
            Ok(Outcome::Ok) => tally.ok += 1,
            Ok(Outcome::Refused) => tally.refused += 1,
            Err(e) => tally
                .failures
                .push(format!("{name} case {case} ({victim}: {what}): {e}")),
        }
    }
}

fn os(v: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    v.iter().map(|s| s.as_ref().to_os_string()).collect()
}

/// A small simulated count matrix over `genes`, written as h5ad.
fn sim_h5ad(path: &Path, genes: &[String], cells: usize) {
    let s = simulate(&SimulationConfig::new(cells, 3, 11), genes.to_vec()).unwrap();
    let mut w = H5adWriter::new(s.obs, s.genes);
    w.x = Some(XMatrix::Csr {
        csr: s.counts,
        n_cols: genes.len(),
    });
    w.write(path).unwrap();
}

#[test]
fn mutated_inputs_are_refused_cleanly() {
    let mut rng = Rng(seed());
    let mut tally = Tally::default();
    let seeds = tempfile::tempdir().unwrap();
    let vocab_path = testdata_path("data/OS_scRNA_gene_index.19264.tsv");
    let vocab = GeneVocab::from_tsv(&vocab_path).unwrap();
    let genes: Vec<String> = vocab.names()[..300].to_vec();

    // Tokenize commands on every reader.
    let tokenize = |genes_tsv: PathBuf, extra: &'static [&'static str]| {
        move |input: &Path, out: &Path| {
            let mut a = os(&[
                &"tokenize",
                &"--input",
                &input,
                &"--genes",
                &genes_tsv,
                &"--output",
                &out,
                &"--skip-empty",
            ]);
            a.extend(extra.iter().map(|s| std::ffi::OsString::from(*s)));
            a
        }
    };

    let h5ad = seeds.path().join("sim.h5ad");
    sim_h5ad(&h5ad, &genes, 30);
    let cmd = tokenize(vocab_path.clone(), &[]);
    fuzz_input(
        "h5ad (ours)",
        &h5ad,
        "",
        mutate_bytes,
        &cmd,
        &mut tally,
        &mut rng,
    );

    let full =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("aido-tokenize/tests/data/anndata_full.h5ad");
    let full_genes = seeds.path().join("full_genes.tsv");
    GeneVocab::from_names((0..20).map(|i| format!("G{i}")).collect())
        .unwrap()
        .write_tsv(&full_genes)
        .unwrap();
    let cmd = tokenize(full_genes, &["--min-overlap-genes", "1"]);
    fuzz_input(
        "h5ad (anndata)",
        &full,
        "",
        mutate_bytes,
        &cmd,
        &mut tally,
        &mut rng,
    );

    let tenx = testdata_path("data/10x_v3_filtered_feature_bc_matrix.h5");
    let cmd = tokenize(vocab_path.clone(), &[]);
    fuzz_input(
        "10x h5",
        &tenx,
        "",
        mutate_bytes,
        &cmd,
        &mut tally,
        &mut rng,
    );

    let mtx = seeds.path().join("mtx");
    std::fs::create_dir(&mtx).unwrap();
    let mut m = String::from("%%MatrixMarket matrix coordinate integer general\n");
    let entries: Vec<(usize, usize, u32)> = (0..12)
        .flat_map(|c| (0..4).map(move |k| ((c * 7 + k * 13) % 40, c, 1 + (c + k) as u32 % 5)))
        .collect();
    m.push_str(&format!("40 12 {}\n", entries.len()));
    for (g, c, v) in &entries {
        m.push_str(&format!("{} {} {v}\n", g + 1, c + 1));
    }
    std::fs::write(mtx.join("matrix.mtx"), m).unwrap();
    let feats: String = genes[..40]
        .iter()
        .enumerate()
        .map(|(i, g)| format!("ENSG{i:011}\t{g}\tGene Expression\n"))
        .collect();
    std::fs::write(mtx.join("features.tsv"), feats).unwrap();
    let bc: String = (0..12).map(|c| format!("CELL{c}-1\n")).collect();
    std::fs::write(mtx.join("barcodes.tsv"), bc).unwrap();
    let cmd = tokenize(vocab_path.clone(), &[]);
    for victim in ["matrix.mtx", "features.tsv", "barcodes.tsv"] {
        fuzz_input("mtx", &mtx, victim, mutate_text, &cmd, &mut tally, &mut rng);
    }

    let csv = seeds.path().join("cells.csv");
    let mut c = String::from("cell");
    for g in &genes[..30] {
        c.push(',');
        c.push_str(g);
    }
    c.push('\n');
    for r in 0..10 {
        c.push_str(&format!("c{r}"));
        for j in 0..30 {
            c.push_str(&format!(",{}", (r * 3 + j) % 4));
        }
        c.push('\n');
    }
    std::fs::write(&csv, c).unwrap();
    let cmd = tokenize(vocab_path.clone(), &[]);
    fuzz_input("csv", &csv, "", mutate_text, &cmd, &mut tally, &mut rng);

    // Checkpoints: `aido embed` with a mutated model folder.
    let fixture = testdata_path("fixtures/aido_cell/tiny_ln_nobias");
    let tiny = GeneVocab::from_tsv(fixture.join("genes.tsv")).unwrap();
    let cells = seeds.path().join("tiny_cells.h5ad");
    sim_h5ad(&cells, tiny.names(), 12);
    let model = seeds.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "model.safetensors", "genes.tsv"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    let model_bin = seeds.path().join("model_bin");
    std::fs::create_dir(&model_bin).unwrap();
    for f in ["config.json", "pytorch_model.bin", "genes.tsv"] {
        std::fs::copy(fixture.join(f), model_bin.join(f)).unwrap();
    }
    let run_embed =
        |name: &str, dir: &Path, victim: &str, m: Mutator, tally: &mut Tally, rng: &mut Rng| {
            let cmd = |input: &Path, out: &Path| {
                os(&[
                    &"embed",
                    &"--model",
                    &input,
                    &"--input",
                    &cells,
                    &"--output",
                    &out,
                ])
            };
            fuzz_input(name, dir, victim, m, &cmd, tally, rng);
        };
    run_embed(
        "checkpoint",
        &model,
        "config.json",
        mutate_json,
        &mut tally,
        &mut rng,
    );
    run_embed(
        "checkpoint",
        &model,
        "model.safetensors",
        mutate_bytes,
        &mut tally,
        &mut rng,
    );
    run_embed(
        "checkpoint",
        &model,
        "genes.tsv",
        mutate_text,
        &mut tally,
        &mut rng,
    );
    run_embed(
        "checkpoint (torch)",
        &model_bin,
        "pytorch_model.bin",
        mutate_bytes,
        &mut tally,
        &mut rng,
    );

    println!(
        "fuzz: {} cases, {} accepted, {} refused cleanly, {} failures (seed {}, {} per seed file)",
        tally.cases,
        tally.ok,
        tally.refused,
        tally.failures.len(),
        seed(),
        cases_per_seed()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} cases broke the contract:\n{}",
        tally.failures.len(),
        tally.cases,
        tally.failures.join("\n")
    );
    assert!(
        tally.refused > 0 && tally.ok > 0,
        "the mutations should both pass and fail"
    );
}
