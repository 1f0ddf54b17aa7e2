//! Picks a short gene panel for CPU-sized pretraining: the `--top` vocabulary genes measured in
//! every input with the highest mean normalized expression `ln(1 + count / total · 1e4)`,
//! written in vocabulary order (the model's position order).
//!
//! ```text
//! cargo run --release --example gene_panel -- --vocab GENES.tsv --top 512 --out panel.tsv \
//!     [--gene-column feature_name] FILE [FILE ...]
//! ```

use std::path::PathBuf;

use aido::tokenize::{GeneVocab, PreprocessConfig, ReadOptions, open_source, source::read_all};
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut it = std::env::args().skip(1);
    let (mut vocab, mut top, mut out, mut col, mut files) =
        (None, 512usize, None, None, Vec::<PathBuf>::new());
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--vocab" => vocab = Some(PathBuf::from(val()?)),
            "--top" => top = val()?.parse()?,
            "--out" => out = Some(PathBuf::from(val()?)),
            "--gene-column" => col = Some(val()?),
            f if !f.starts_with("--") => files.push(PathBuf::from(f)),
            o => bail!("unknown argument {o}"),
        }
    }
    let usage = "usage: gene_panel --vocab GENES.tsv --top N --out PANEL.tsv FILE [FILE ...]";
    let vocab = GeneVocab::from_tsv(vocab.context(usage)?)?;
    let out = out.context(usage)?;
    if files.is_empty() {
        bail!("{usage}");
    }
    let g = vocab.len();
    let pre = PreprocessConfig::default();
    let mut score = vec![0.0f64; g];
    let mut measured_by = vec![0usize; g];
    for f in &files {
        let opts = ReadOptions {
            gene_column: col.clone(),
            layer: None,
            raw: false,
        };
        let mut src = open_source(f, &opts)?;
        let pos: Vec<Option<usize>> = src.gene_names().iter().map(|n| vocab.position(n)).collect();
        let mut seen = vec![false; g];
        for p in pos.iter().flatten() {
            seen[*p] = true;
        }
        for (p, s) in seen.iter().enumerate() {
            measured_by[p] += usize::from(*s);
        }
        let m = read_all(src.as_mut())?;
        let n = m.indptr.len() - 1;
        for i in 0..n {
            let (idx, val) = (
                &m.indices[m.indptr[i]..m.indptr[i + 1]],
                &m.data[m.indptr[i]..m.indptr[i + 1]],
            );
            let total: f32 = val.iter().sum();
            if total <= 0.0 {
                continue;
            }
            for (&j, &v) in idx.iter().zip(val) {
                if let Some(p) = pos[j as usize] {
                    score[p] += f64::from(pre.gene_value(v, total)) / n as f64;
                }
            }
        }
    }
    let mut cand: Vec<usize> = (0..g).filter(|&p| measured_by[p] == files.len()).collect();
    if cand.len() < top {
        bail!(
            "only {} vocabulary genes are measured by every input (asked for {top})",
            cand.len()
        );
    }
    cand.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    cand.truncate(top);
    cand.sort_unstable();
    let names: Vec<String> = cand.iter().map(|&p| vocab.names()[p].clone()).collect();
    GeneVocab::from_names(names)?.write_tsv(&out)?;
    println!(
        "wrote {} genes measured by all {} inputs to {}",
        top,
        files.len(),
        out.display()
    );
    Ok(())
}
