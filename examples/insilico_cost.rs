//! Timed in-silico knockouts (`aido_tasks::insilico::cell_shifts`, the core of `aido insilico`):
//! cost per (cell × gene) of the 3M shape at a gene panel and at full context, the perturbed
//! copies of a cell batched against one at a time, in the same run.
//!
//! ```text
//! cargo run --release --example insilico_cost -- [--panel-genes 1000] [--cells 4] [--genes 32]
//!     [--full MODEL_DIR --full-genes 8] [--repeats 3]
//! ```
//! The panel model is the 3M shape (6 blocks, H 128, 4 heads, I 320) with random weights over a
//! synthetic panel; `--full` takes a full-context checkpoint (e.g.
//! `../shared/fixtures/aido_cell/aido_cell_3m_random`, S = 19,266). Cells are simulated counts
//! (`aido_tokenize::simulate`, median 5,000 UMIs); every perturbed gene is expressed in the cell
//! (knockouts of unexpressed genes cost nothing). Prints medians of `--repeats` runs.

use std::time::Instant;

use aido::model::burn::tensor::backend::Backend;
use aido::model::load::{LoadMode, load_checkpoint};
use aido::model::{AidoCellConfig, AidoCellModel, Cpu, Embedder, Pooling};
use aido::tasks::insilico::{InsilicoMode, cell_shifts};
use aido::tokenize::PreprocessConfig;
use aido::tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};
use anyhow::{Context, Result, bail};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a value")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of `cells × genes` knockouts at each batch size, `repeats` interleaved runs.
fn time_case(
    model: AidoCellModel<Cpu>,
    n_genes: usize,
    cells: usize,
    targets_per_cell: usize,
    batches: &[usize],
    repeats: usize,
) -> Result<Vec<(usize, f64, usize)>> {
    let mut cfg = SimulationConfig::new(cells, 2, 9);
    cfg.library_median = 5000.0;
    let sim = simulate(&cfg, synthetic_gene_names(n_genes))?;
    let present = vec![1u8; n_genes + 2];
    let embedder = Embedder::new(model, Default::default(), present, Pooling::PresentMean)?;
    let pre = PreprocessConfig::default();
    let mut rows: Vec<(Vec<f32>, Vec<usize>)> = Vec::new();
    for c in 0..cells {
        let mut counts = vec![0.0f32; n_genes];
        let (idx, val) = sim.counts.row(c);
        for (&j, &v) in idx.iter().zip(val) {
            counts[j as usize] = v;
        }
        let mut expressed: Vec<usize> = (0..n_genes).filter(|&j| counts[j] > 0.0).collect();
        if expressed.len() < targets_per_cell {
            bail!("cell {c} expresses only {} genes", expressed.len());
        }
        // Evenly spread expressed genes.
        let step = expressed.len() / targets_per_cell;
        expressed = expressed
            .into_iter()
            .step_by(step)
            .take(targets_per_cell)
            .collect();
        rows.push((counts, expressed));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    let mut computed = vec![0usize; batches.len()];
    let mut reference: Option<Vec<Vec<f32>>> = None;
    for _ in 0..repeats {
        for (bi, &bs) in batches.iter().enumerate() {
            let t = Instant::now();
            let mut all = Vec::new();
            let mut n = 0;
            for (counts, targets) in &mut rows {
                let s = cell_shifts(
                    &embedder,
                    &pre,
                    counts,
                    targets,
                    InsilicoMode::Knockout,
                    bs,
                    |_| {},
                )?
                .context("cell with < 2 genes")?;
                n += s.computed;
                all.push(s.shifts);
            }
            times[bi].push(t.elapsed().as_secs_f64());
            computed[bi] = n;
            match &reference {
                None => reference = Some(all),
                Some(r) => {
                    let d = r
                        .iter()
                        .flatten()
                        .zip(all.iter().flatten())
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    if d > 1e-5 {
                        bail!("batch size {bs} changed a shift by {d}");
                    }
                }
            }
        }
    }
    Ok(batches
        .iter()
        .zip(times)
        .zip(computed)
        .map(|((&b, t), n)| (b, median(t), n))
        .collect())
}

fn report(what: &str, rows: &[(usize, f64, usize)]) {
    let one = rows.iter().find(|r| r.0 == 1).map(|r| r.1);
    for &(bs, secs, n) in rows {
        println!(
            "{what:<28} batch {bs:>2}: {secs:>8.2} s for {n} cell×gene = {:>8.2} ms each{}",
            1e3 * secs / n.max(1) as f64,
            one.map(|o| format!("  ({:.2}× one-at-a-time)", secs / o))
                .unwrap_or_default()
        );
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let panel: usize = arg(&args, "--panel-genes", 1000)?;
    let cells: usize = arg(&args, "--cells", 4)?;
    let genes: usize = arg(&args, "--genes", 32)?;
    let repeats: usize = arg(&args, "--repeats", 3)?;
    let full: Option<String> = args
        .iter()
        .position(|a| a == "--full")
        .and_then(|i| args.get(i + 1).cloned());
    let full_genes: usize = arg(&args, "--full-genes", 8)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "insilico knockout cost, CPU (burn-flex, {threads} threads), medians of {repeats} runs"
    );
    let dev = Default::default();
    Cpu::seed(&dev, 1);
    let cfg = AidoCellConfig::new(panel, 128, 6, 4, 320);
    let model = cfg.init::<Cpu>(false, &dev).bert;
    let rows = time_case(model, panel, cells, genes, &[8, 1], repeats)?;
    report(&format!("3M shape, {panel}-gene panel"), &rows);
    if let Some(dir) = full {
        let (model, cfg) = load_checkpoint::<Cpu>(dir.as_ref(), LoadMode::EncoderOnly, &dev)?;
        let g = cfg.seq_len() - 2;
        let rows = time_case(model.bert, g, 1, full_genes, &[8, 1], repeats)?;
        report(&format!("{dir} (S = {})", g + 2), &rows);
    }
    Ok(())
}
