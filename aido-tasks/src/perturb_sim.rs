//! A perturbation screen with known effects, for the demo, the tests and the benchmarks.
//!
//! Genes fall into co-regulated programs; a control cell's program activities `z_p ~ N(0, σ_z)`
//! move every member gene (`log rate_g = base_g + l_g · z_p`, loadings `l_g ~ U(0.5, 1)`), so
//! members co-vary across control cells. The programs form a ring in which program `p` drives
//! program `p + 1` with a signed weight (`±cascade`).
//!
//! Perturbing gene `a` of program `p` (CRISPRa-style) raises `a` itself by `direct` (log scale)
//! and program `p`'s activity by `effect · s_a` (`s_a ~ U(0.7, 1.3)`); the shift spreads to the
//! next program through the ring. A double adds its genes' shifts; for a `synergy_fraction` of
//! the doubles the program shifts are scaled by 1.5 (an interaction no additive model sees).
//! Counts are negative binomial (θ = `dispersion`) around `library × softmax(log rate)`, the
//! library log-normal around `library_median`.
//!
//! Because a gene's effect is its program's, the effect of a gene never perturbed in training is
//! predictable from the genes it co-varies with in control cells — the situation GEARS's graphs
//! are built for.

use aido_tokenize::CsrChunk;
use aido_tokenize::simulate::nb_draw;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use serde::Serialize;

use crate::{Result, TaskError};

/// Settings of [`simulate_perturbations`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerturbSimConfig {
    /// Genes in all (programs first, then background genes).
    pub genes: usize,
    /// Co-regulated programs.
    pub programs: usize,
    /// Genes per program.
    pub genes_per_program: usize,
    /// Control cells.
    pub control_cells: usize,
    /// Cells per perturbation condition.
    pub cells_per_condition: usize,
    /// Genes perturbed alone (drawn from the programs).
    pub perturbed_genes: usize,
    /// Two-gene conditions (pairs of perturbed genes).
    pub doubles: usize,
    /// Program shift of a perturbation (log scale).
    pub effect: f64,
    /// Direct rise of the perturbed gene itself (log scale).
    pub direct: f64,
    /// Weight with which a program's shift reaches the next program.
    pub cascade: f64,
    /// Standard deviation of the program activities in control cells.
    pub activity_sd: f64,
    /// Share of the doubles with a synergistic (non-additive) effect.
    pub synergy_fraction: f64,
    /// Median library size (UMIs).
    pub library_median: f64,
    /// Negative binomial dispersion θ.
    pub dispersion: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for PerturbSimConfig {
    fn default() -> Self {
        Self {
            genes: 400,
            programs: 8,
            genes_per_program: 25,
            control_cells: 600,
            cells_per_condition: 40,
            perturbed_genes: 40,
            doubles: 40,
            effect: 1.0,
            direct: 2.0,
            cascade: 0.6,
            activity_sd: 0.5,
            synergy_fraction: 0.25,
            library_median: 4000.0,
            dispersion: 10.0,
            seed: 0,
        }
    }
}

/// A simulated screen.
#[derive(Debug, Clone)]
pub struct PerturbSim {
    /// Gene names.
    pub genes: Vec<String>,
    /// Program of every gene (`None`: background).
    pub program: Vec<Option<usize>>,
    /// Raw counts, cells × genes.
    pub counts: CsrChunk,
    /// Condition of every cell (`ctrl`, `A+ctrl`, `A+B`).
    pub condition: Vec<String>,
    /// The true shift of the log rate of every gene, per condition name (`[genes]`).
    pub true_shift: Vec<(String, Vec<f64>)>,
}

fn dist(what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError::Config(format!("perturbation simulator: {what}: {e}"))
}

/// Simulates a screen (see the module documentation).
pub fn simulate_perturbations(cfg: &PerturbSimConfig) -> Result<PerturbSim> {
    let in_programs = cfg.programs * cfg.genes_per_program;
    if cfg.programs < 2 || cfg.genes_per_program < 2 || in_programs > cfg.genes {
        return Err(TaskError::Config(format!(
            "perturbation simulator: {} programs × {} genes need at least 2 × 2 and at most `genes` {}",
            cfg.programs, cfg.genes_per_program, cfg.genes
        )));
    }
    if cfg.perturbed_genes < 2 || cfg.perturbed_genes > in_programs {
        return Err(TaskError::Config(format!(
            "perturbation simulator: {} perturbed genes, between 2 and the {in_programs} program genes",
            cfg.perturbed_genes
        )));
    }
    let max_pairs = cfg.perturbed_genes * (cfg.perturbed_genes - 1) / 2;
    if cfg.doubles > max_pairs || cfg.control_cells < 2 || cfg.cells_per_condition < 2 {
        return Err(TaskError::Config(format!(
            "perturbation simulator: {} doubles of at most {max_pairs}, and at least 2 control cells and 2 cells per condition",
            cfg.doubles
        )));
    }
    let g = cfg.genes;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let base_d = Normal::new(0.0, 1.2).map_err(|e| dist("base", e))?;
    let base: Vec<f64> = (0..g).map(|_| base_d.sample(&mut rng)).collect();
    let program: Vec<Option<usize>> = (0..g)
        .map(|j| (j < in_programs).then_some(j / cfg.genes_per_program))
        .collect();
    let loading: Vec<f64> = (0..g).map(|_| rng.random_range(0.5..1.0)).collect();
    let link: Vec<f64> = (0..cfg.programs)
        .map(|_| {
            if rng.random_bool(0.5) {
                cfg.cascade
            } else {
                -cfg.cascade
            }
        })
        .collect();
    let strength: Vec<f64> = (0..g).map(|_| rng.random_range(0.7..1.3)).collect();
    let mut pool: Vec<usize> = (0..in_programs).collect();
    pool.shuffle(&mut rng);
    pool.truncate(cfg.perturbed_genes);
    pool.sort_unstable();
    let genes: Vec<String> = (0..g)
        .map(|j| match program[j] {
            Some(p) => format!("P{p}G{:02}", j % cfg.genes_per_program),
            None => format!("BG{:04}", j - in_programs),
        })
        .collect();
    // Conditions: control, singles, doubles (distinct pairs).
    let mut conds: Vec<(String, Vec<usize>, bool)> = vec![("ctrl".into(), vec![], false)];
    for &a in &pool {
        conds.push((format!("{}+ctrl", genes[a]), vec![a], false));
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for i in 0..pool.len() {
        for j in i + 1..pool.len() {
            pairs.push((pool[i], pool[j]));
        }
    }
    pairs.shuffle(&mut rng);
    pairs.truncate(cfg.doubles);
    for (a, b) in pairs {
        let syn = rng.random_bool(cfg.synergy_fraction.clamp(0.0, 1.0));
        conds.push((format!("{}+{}", genes[a], genes[b]), vec![a, b], syn));
    }
    // True shift of the log rate per condition.
    let shift_of = |perts: &[usize], syn: bool| -> Vec<f64> {
        let mut prog = vec![0.0f64; cfg.programs];
        for &a in perts {
            if let Some(p) = program[a] {
                let s = cfg.effect * strength[a];
                prog[p] += s;
                prog[(p + 1) % cfg.programs] += link[p] * s;
            }
        }
        if syn {
            prog.iter_mut().for_each(|v| *v *= 1.5);
        }
        let mut out: Vec<f64> = (0..g)
            .map(|j| program[j].map_or(0.0, |p| loading[j] * prog[p]))
            .collect();
        for &a in perts {
            out[a] += cfg.direct;
        }
        out
    };
    let lib = LogNormal::new(cfg.library_median.ln(), 0.3).map_err(|e| dist("library", e))?;
    let act = Normal::new(0.0, cfg.activity_sd).map_err(|e| dist("activity", e))?;
    let mut counts = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    let mut condition = Vec::new();
    let mut true_shift = Vec::new();
    let mut logits = vec![0.0f64; g];
    for (name, perts, syn) in &conds {
        let shift = shift_of(perts, *syn);
        let n = if perts.is_empty() {
            cfg.control_cells
        } else {
            cfg.cells_per_condition
        };
        for _ in 0..n {
            let z: Vec<f64> = (0..cfg.programs).map(|_| act.sample(&mut rng)).collect();
            for (j, l) in logits.iter_mut().enumerate() {
                *l = base[j] + shift[j] + program[j].map_or(0.0, |p| loading[j] * z[p]);
            }
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            let l = lib.sample(&mut rng);
            let start = counts.data.len();
            for (j, &lj) in logits.iter().enumerate() {
                let v = nb_draw(&mut rng, l * (lj - m).exp() / sum, cfg.dispersion)
                    .map_err(|e| dist("counts", e))?;
                if v > 0.0 {
                    counts.indices.push(j as u32);
                    counts.data.push(v as f32);
                }
            }
            if counts.data.len() == start {
                counts.indices.push(0);
                counts.data.push(1.0);
            }
            counts.indptr.push(counts.data.len());
            condition.push(name.clone());
        }
        true_shift.push((name.clone(), shift));
    }
    Ok(PerturbSim {
        genes,
        program,
        counts,
        condition,
        true_shift,
    })
}
