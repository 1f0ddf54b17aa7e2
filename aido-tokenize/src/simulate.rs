//! A simulator of raw UMI counts with known structure: the embedded default data set.
//!
//! Generative model (all draws from one seeded RNG, so a seed fixes the data set):
//! - gene base expression: `log μ_g ~ Normal(0, 1.6)`, normalized to proportions `p_g`;
//! - each cell type `k` up-regulates its own program, a random `program_fraction` of the genes,
//!   by a log-fold-change `~ Uniform(1.0, 3.0)` and down-regulates another equal-sized random set
//!   by `~ Uniform(0.5, 1.5)`;
//! - optional batches multiply every gene by `exp(Normal(0, batch_sd))`;
//! - library size `L ~ LogNormal(ln 5000, 0.6)`, clipped to 1,000–30,000 UMIs;
//! - counts `c_g ~ NegativeBinomial(mean = L · p_{k,g}, dispersion θ)` drawn as a
//!   Gamma(θ, mean/θ)–Poisson mixture.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Gamma, LogNormal, Normal, Poisson, Uniform};

use crate::error::{Result, TokenizeError};
use crate::source::{CsrChunk, ObsColumn, ObsTable};

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Number of cells.
    pub n_cells: usize,
    /// Number of cell types.
    pub n_cell_types: usize,
    /// Number of batches (1 = no batch effect).
    pub n_batches: usize,
    /// RNG seed.
    pub seed: u64,
    /// Fraction of genes in each type's up (and down) program.
    pub program_fraction: f64,
    /// Negative-binomial dispersion θ (variance = μ + μ²/θ).
    pub dispersion: f64,
    /// Standard deviation of the per-batch, per-gene log effect.
    pub batch_sd: f64,
    /// Median library size (UMIs).
    pub library_median: f64,
    /// Log-normal σ of the library size.
    pub library_sigma: f64,
    /// Library size bounds (UMIs).
    pub library_range: (f64, f64),
}

impl SimulationConfig {
    /// Defaults for `n_cells` cells of `n_cell_types` types.
    pub fn new(n_cells: usize, n_cell_types: usize, seed: u64) -> Self {
        SimulationConfig {
            n_cells,
            n_cell_types,
            n_batches: 1,
            seed,
            program_fraction: 0.05,
            dispersion: 2.0,
            batch_sd: 0.3,
            library_median: 5000.0,
            library_sigma: 0.6,
            library_range: (1000.0, 30000.0),
        }
    }
}

/// A simulated data set: raw counts as cells × genes CSR, with truth labels in `obs`.
#[derive(Debug, Clone)]
pub struct SimulatedData {
    /// Gene names (the var index), in column order.
    pub genes: Vec<String>,
    /// Cell names, `cell_type` (categorical) and, with batches, `batch`.
    pub obs: ObsTable,
    /// All cells, counts stored as f32 integers.
    pub counts: CsrChunk,
}

/// Names of a synthetic gene panel: `SIMG00001`, `SIMG00002`, …
pub fn synthetic_gene_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("SIMG{i:05}")).collect()
}

fn dist_err(what: &str, e: impl std::fmt::Display) -> TokenizeError {
    TokenizeError::InvalidArgument(format!("simulation parameter {what}: {e}"))
}

/// Draws one NB(mean, θ) count as a Gamma–Poisson mixture (`mean ≤ 0` gives 0).
pub fn nb_draw(rng: &mut StdRng, mean: f64, theta: f64) -> Result<f64> {
    if mean <= 0.0 {
        return Ok(0.0);
    }
    let lambda = Gamma::new(theta, mean / theta)
        .map_err(|e| dist_err("dispersion", e))?
        .sample(rng);
    if lambda <= 0.0 {
        return Ok(0.0);
    }
    Ok(Poisson::new(lambda)
        .map_err(|e| dist_err("poisson mean", e))?
        .sample(rng))
}

/// Simulates counts over the given gene names.
pub fn simulate(cfg: &SimulationConfig, genes: Vec<String>) -> Result<SimulatedData> {
    if cfg.n_cells == 0 || cfg.n_cell_types == 0 || genes.is_empty() || cfg.n_batches == 0 {
        return Err(TokenizeError::InvalidArgument(
            "simulate: cells, genes, cell types and batches must all be at least 1".into(),
        ));
    }
    let g = genes.len();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let normal = Normal::new(0.0, 1.6).map_err(|e| dist_err("base", e))?;
    let base: Vec<f64> = (0..g).map(|_| normal.sample(&mut rng)).collect();

    // Per-type log-expression profiles.
    let n_prog = ((cfg.program_fraction * g as f64).round() as usize).clamp(1, g);
    let up = Uniform::new(1.0, 3.0).map_err(|e| dist_err("up", e))?;
    let down = Uniform::new(0.5, 1.5).map_err(|e| dist_err("down", e))?;
    let mut profiles: Vec<Vec<f64>> = Vec::with_capacity(cfg.n_cell_types);
    for _ in 0..cfg.n_cell_types {
        let mut lp = base.clone();
        for _ in 0..n_prog {
            let j = rng.random_range(0..g);
            lp[j] += up.sample(&mut rng);
            let j = rng.random_range(0..g);
            lp[j] -= down.sample(&mut rng);
        }
        profiles.push(lp);
    }
    let batch_effects: Vec<Vec<f64>> = if cfg.n_batches > 1 {
        let bn = Normal::new(0.0, cfg.batch_sd).map_err(|e| dist_err("batch_sd", e))?;
        (0..cfg.n_batches)
            .map(|_| (0..g).map(|_| bn.sample(&mut rng)).collect())
            .collect()
    } else {
        vec![vec![0.0; g]]
    };
    // Proportions per (type, batch).
    let mut props: Vec<Vec<Vec<f64>>> = Vec::with_capacity(cfg.n_cell_types);
    for lp in &profiles {
        let mut per_batch = Vec::with_capacity(batch_effects.len());
        for be in &batch_effects {
            let w: Vec<f64> = lp.iter().zip(be).map(|(a, b)| (a + b).exp()).collect();
            let s: f64 = w.iter().sum();
            per_batch.push(w.into_iter().map(|x| x / s).collect());
        }
        props.push(per_batch);
    }

    let lib = LogNormal::new(cfg.library_median.ln(), cfg.library_sigma)
        .map_err(|e| dist_err("library", e))?;
    let mut counts = CsrChunk {
        first_cell: 0,
        indptr: vec![0],
        ..Default::default()
    };
    let mut types = Vec::with_capacity(cfg.n_cells);
    let mut batches = Vec::with_capacity(cfg.n_cells);
    for c in 0..cfg.n_cells {
        let k = c % cfg.n_cell_types;
        let b = rng.random_range(0..cfg.n_batches);
        let l = lib
            .sample(&mut rng)
            .clamp(cfg.library_range.0, cfg.library_range.1);
        let p = &props[k][b];
        let mut total = 0.0;
        let start = counts.data.len();
        for (j, &pj) in p.iter().enumerate() {
            let v = nb_draw(&mut rng, l * pj, cfg.dispersion)?;
            if v > 0.0 {
                counts.indices.push(j as u32);
                counts.data.push(v as f32);
                total += v;
            }
        }
        if total == 0.0 {
            // Never hand out an empty cell: give it one count in its most expressed gene.
            let j = p
                .iter()
                .enumerate()
                .fold(0, |best, (j, &x)| if x > p[best] { j } else { best });
            counts.data.truncate(start);
            counts.indices.truncate(start);
            counts.indices.push(j as u32);
            counts.data.push(1.0);
        }
        counts.indptr.push(counts.data.len());
        types.push(k as i32);
        batches.push(b as i32);
    }
    let mut obs = ObsTable::from_names((0..cfg.n_cells).map(|i| format!("cell{i:06}")).collect());
    obs.columns.push((
        "cell_type".into(),
        ObsColumn::Categorical {
            codes: types,
            categories: (0..cfg.n_cell_types).map(|k| format!("type_{k}")).collect(),
            ordered: false,
        },
    ));
    if cfg.n_batches > 1 {
        obs.columns.push((
            "batch".into(),
            ObsColumn::Categorical {
                codes: batches,
                categories: (0..cfg.n_batches).map(|b| format!("batch_{b}")).collect(),
                ordered: false,
            },
        ));
    }
    Ok(SimulatedData { genes, obs, counts })
}

/// A seeded uniform permutation of `0..n` (Fisher–Yates), e.g. to pick a gene subset.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}
