//! Simulated data written as h5ad: cell-type counts ([`write_cells`]) and perturbation screens
//! ([`write_screen`]), what `aido simulate` runs.

use std::collections::BTreeMap;
use std::path::Path;

use aido_tasks::perturb_sim::{PerturbSimConfig, simulate_perturbations};
use aido_tokenize::h5ad_out::{H5adWriter, XMatrix};
use aido_tokenize::simulate::{SimulationConfig, simulate};
use aido_tokenize::{CsrChunk, ObsColumn, ObsTable};
use serde::Serialize;

use crate::error::{PipelineError, Result};

/// What a simulation wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Simulated {
    /// Cells.
    pub cells: usize,
    /// The genes, in column order.
    pub genes: Vec<String>,
    /// Stored non-zero counts.
    pub nnz: usize,
    /// Conditions (screens only: control + singles + doubles).
    pub conditions: usize,
    /// Control cells written to the controls file (screens only).
    pub control_cells: usize,
}

/// The genes of a simulation drawn from a gene list: all of them, or a seeded subset of `n`
/// kept in list order (real data measure only part of a list).
pub fn genes_from_vocabulary(
    vocab: &aido_tokenize::GeneVocab,
    n: Option<usize>,
    seed: u64,
) -> Result<Vec<String>> {
    let names = vocab.names();
    match n {
        None => Ok(names.to_vec()),
        Some(n) if n > names.len() => Err(PipelineError::option(
            "genes",
            format!("{n} exceeds the {} genes of the list", names.len()),
        )),
        Some(n) => {
            let mut pick = aido_tokenize::simulate::permutation(names.len(), seed ^ 0x9e37_79b9);
            pick.truncate(n);
            pick.sort_unstable();
            Ok(pick.into_iter().map(|i| names[i].clone()).collect())
        }
    }
}

impl std::fmt::Display for Simulated {
    /// `N cells × G genes, NNZ non-zero (D% dense)`, with the conditions of a screen.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.genes.len();
        write!(f, "{} cells × {g} genes", self.cells)?;
        if self.conditions > 0 {
            write!(f, ", {} conditions", self.conditions)?;
        }
        write!(
            f,
            ", {} non-zero ({:.2}% dense)",
            self.nnz,
            100.0 * self.nnz as f64 / (self.cells * g).max(1) as f64
        )
    }
}

/// Writes simulated raw counts with known cell types (`obs/cell_type`, `obs/batch` with more
/// than one batch) over `genes` to `output`.
pub fn write_cells(cfg: &SimulationConfig, genes: Vec<String>, output: &Path) -> Result<Simulated> {
    crate::output::check_writable(output, "output")?;
    let sim = simulate(cfg, genes)?;
    let nnz = sim.counts.data.len();
    let n_genes = sim.genes.len();
    let genes = sim.genes.clone();
    let mut w = H5adWriter::new(sim.obs, sim.genes);
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols: n_genes,
    });
    w.uns
        .push(("aido_simulation".into(), format!("{cfg:?}").into()));
    w.write(output)?;
    Ok(Simulated {
        cells: cfg.n_cells,
        genes,
        nnz,
        conditions: 0,
        control_cells: 0,
    })
}

/// Writes a simulated perturbation screen (`obs/condition`: `ctrl`, `A+ctrl`, `A+B`;
/// `var/program`) to `output`, and its control cells alone to `controls_out` when given.
pub fn write_screen(
    cfg: &PerturbSimConfig,
    output: &Path,
    controls_out: Option<&Path>,
) -> Result<Simulated> {
    crate::output::check_writable(output, "output")?;
    if let Some(c) = controls_out {
        crate::output::check_writable(c, "controls_out")?;
    }
    let sim = simulate_perturbations(cfg)?;
    let n = sim.condition.len();
    let mut categories: Vec<String> = Vec::new();
    let mut codes = Vec::with_capacity(n);
    let mut idx: BTreeMap<&str, i32> = BTreeMap::new();
    for c in &sim.condition {
        let k = *idx.entry(c.as_str()).or_insert_with(|| {
            categories.push(c.clone());
            (categories.len() - 1) as i32
        });
        codes.push(k);
    }
    let mut obs = ObsTable::from_names((0..n).map(|i| format!("cell{i:06}")).collect());
    obs.columns.push((
        "condition".into(),
        ObsColumn::Categorical {
            codes,
            categories,
            ordered: false,
        },
    ));
    let g = sim.genes.len();
    let mut w = H5adWriter::new(obs, sim.genes.clone());
    let genes = sim.genes.clone();
    w.var_columns.push((
        "program".into(),
        ObsColumn::Int(
            sim.program
                .iter()
                .map(|p| p.map_or(-1, |p| p as i64))
                .collect(),
        ),
    ));
    let nnz = sim.counts.data.len();
    let mut control_cells = 0;
    if let Some(path) = controls_out {
        let keep: Vec<usize> = (0..n).filter(|&i| sim.condition[i] == "ctrl").collect();
        let mut csr = CsrChunk {
            first_cell: 0,
            indptr: vec![0],
            ..Default::default()
        };
        for &i in &keep {
            let (idx, vals) = sim.counts.row(i);
            csr.indices.extend_from_slice(idx);
            csr.data.extend_from_slice(vals);
            csr.indptr.push(csr.data.len());
        }
        let mut c = H5adWriter::new(w.obs.select(&keep), sim.genes.clone());
        c.var_columns = w.var_columns.clone();
        c.x = Some(XMatrix::Csr { csr, n_cols: g });
        c.write(path)?;
        control_cells = keep.len();
    }
    w.x = Some(XMatrix::Csr {
        csr: sim.counts,
        n_cols: g,
    });
    let text =
        serde_json::to_string(cfg).map_err(|e| PipelineError::option("internal", e.to_string()))?;
    w.uns
        .push(("aido_perturbation_simulation".into(), text.into()));
    w.write(output)?;
    Ok(Simulated {
        cells: n,
        genes,
        nnz,
        conditions: sim.true_shift.len(),
        control_cells,
    })
}
