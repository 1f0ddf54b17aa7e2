//! Building RDA examples and batches.

use aido_model::burn::tensor::backend::Backend;
use aido_model::burn::tensor::{Tensor, TensorData};
use aido_tokenize::{MASK_VALUE, PreprocessConfig, TokenBatch};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Binomial, Distribution};

use crate::{RdaConfig, RdaError, Result};

/// One training example over `G + 2` positions.
#[derive(Debug, Clone, PartialEq)]
pub struct RdaExample {
    /// Model input: normalized (possibly downsampled) values, −1 at masked genes, then `T`, `S`.
    pub input: Vec<f32>,
    /// Target: the normalized raw (high-depth) values, then `T`, `S`.
    pub target: Vec<f32>,
    /// 1 where the loss is computed (the chosen genes), else 0; never set at the depth tokens.
    pub mask: Vec<u8>,
    /// The thinning rate `b` when the cell was downsampled.
    pub rate: Option<f64>,
    /// `total(x_raw)` over the aligned genes.
    pub raw_total: f32,
    /// `total(x)` of the input counts.
    pub input_total: f32,
    /// Measured genes that are non-zero in the input (before masking).
    pub input_nonzero: usize,
}

/// Builds examples with a seed; stateless across calls (see the crate docs on randomness).
#[derive(Debug, Clone)]
pub struct RdaSampler {
    cfg: RdaConfig,
    seed: u64,
    present: Vec<u8>,
    pre: PreprocessConfig,
}

/// splitmix64 finalizer: decorrelates the per-example seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RdaSampler {
    /// `present: [G + 2]` is the dataset's presence mask over the vocabulary (1 = measured,
    /// the two depth positions last); only measured genes are ever masked, so a gene the
    /// dataset does not measure is never taught as "zero".
    pub fn new(cfg: RdaConfig, seed: u64, present: &[u8]) -> Result<Self> {
        cfg.validate()?;
        if present.len() < 3 {
            return Err(RdaError::Config(format!(
                "presence mask of {} positions (G + 2 with G ≥ 1 expected)",
                present.len()
            )));
        }
        Ok(RdaSampler {
            cfg,
            seed,
            present: present.to_vec(),
            pre: PreprocessConfig {
                depth_floor: None,
                scale: cfg.scale,
                clip: cfg.clip,
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RdaConfig {
        &self.cfg
    }

    /// Sequence length `G + 2`.
    pub fn seq_len(&self) -> usize {
        self.present.len()
    }

    /// The RNG of example `(epoch, cell)`.
    pub fn rng(&self, epoch: u64, cell: usize) -> StdRng {
        StdRng::seed_from_u64(mix(mix(self.seed ^ mix(epoch)) ^ cell as u64))
    }

    /// One example from a cell's aligned raw counts `(vocabulary position, count)`
    /// (`aido_tokenize::TokenBatch::counts`). Counts are rounded to integers for the binomial
    /// thinning. `cell` names the cell in errors and seeds its RNG.
    pub fn example(&self, epoch: u64, cell: usize, counts: &[(u32, f32)]) -> Result<RdaExample> {
        let s = self.seq_len();
        let g = s - 2;
        let bad = |detail: String| RdaError::Cell { cell, detail };
        let mut raw: Vec<(usize, u64)> = Vec::with_capacity(counts.len());
        for &(p, c) in counts {
            let p = p as usize;
            if p >= g {
                return Err(bad(format!("gene position {p} outside the {g} genes")));
            }
            if !c.is_finite() || c < 0.0 {
                return Err(bad(format!("count {c} at gene position {p}")));
            }
            let c = c.round() as u64;
            if c > 0 {
                raw.push((p, c));
            }
        }
        let raw_total: u64 = raw.iter().map(|e| e.1).sum();
        if raw_total == 0 {
            return Err(bad("no counts in the aligned genes".into()));
        }
        let mut rng = self.rng(epoch, cell);
        // 1. Downsample or not.
        let mut rate = None;
        let mut x = raw.clone();
        let wants = rng.random::<f64>() < self.cfg.downsample_prob;
        if wants && raw_total as f32 >= self.cfg.min_total_for_downsampling {
            let beta = Beta::new(self.cfg.beta_alpha, self.cfg.beta_beta)
                .map_err(|e| RdaError::Config(format!("Beta: {e}")))?;
            let b: f64 = beta.sample(&mut rng);
            let mut thinned = Vec::with_capacity(raw.len());
            for &(p, c) in &raw {
                let k = Binomial::new(c, b)
                    .map_err(|e| RdaError::Config(format!("Binomial({c}, {b}): {e}")))?
                    .sample(&mut rng);
                if k > 0 {
                    thinned.push((p, k));
                }
            }
            // Guard (ours): a thinned cell keeps at least one count, else it is not downsampled.
            if !thinned.is_empty() {
                x = thinned;
                rate = Some(b);
            }
        }
        let input_total: u64 = x.iter().map(|e| e.1).sum();
        let (rt, it) = (raw_total as f32, input_total as f32);
        // 2–4. Values: the inference arithmetic without the depth floor.
        let mut input = vec![0.0f32; s];
        let mut target = vec![0.0f32; s];
        for &(p, c) in &x {
            input[p] = self.pre.gene_value(c as f32, it);
        }
        for &(p, c) in &raw {
            target[p] = self.pre.gene_value(c as f32, rt);
        }
        let (t_tok, s_tok) = (self.pre.depth_value(rt), self.pre.depth_value(it));
        input[g] = t_tok;
        input[g + 1] = s_tok;
        target[g] = t_tok;
        target[g + 1] = s_tok;
        // 5. Masking among measured genes.
        let (mut nonzero, mut zero) = (Vec::new(), Vec::new());
        for (p, (&v, &m)) in input[..g].iter().zip(&self.present[..g]).enumerate() {
            if m == 1 {
                if v > 0.0 {
                    nonzero.push(p);
                } else {
                    zero.push(p);
                }
            }
        }
        let k_nz = ((self.cfg.mask_nonzero_fraction * nonzero.len() as f64).round() as usize)
            .max(self.cfg.min_masked_nonzero.min(nonzero.len()));
        let k_z = (self.cfg.mask_zero_fraction * zero.len() as f64).round() as usize;
        let mut mask = vec![0u8; s];
        let mut chosen: Vec<usize> = sample(&mut rng, nonzero.len(), k_nz)
            .into_iter()
            .map(|i| nonzero[i])
            .collect();
        chosen.extend(
            sample(&mut rng, zero.len(), k_z)
                .into_iter()
                .map(|i| zero[i]),
        );
        let originals = input.clone();
        for &p in &chosen {
            mask[p] = 1;
            input[p] = match self.cfg.replacement {
                None => MASK_VALUE,
                Some(r) => {
                    let u = rng.random::<f64>();
                    if u < r.random {
                        // Another measured gene's input value of the same cell.
                        let all = nonzero.len() + zero.len();
                        let j = rng.random_range(0..all);
                        let q = if j < nonzero.len() {
                            nonzero[j]
                        } else {
                            zero[j - nonzero.len()]
                        };
                        originals[q]
                    } else if u < r.random + r.keep {
                        originals[p]
                    } else {
                        MASK_VALUE
                    }
                }
            };
        }
        Ok(RdaExample {
            input,
            target,
            mask,
            rate,
            raw_total: rt,
            input_total: it,
            input_nonzero: nonzero.len(),
        })
    }

    /// Examples for a tokenized batch (its `counts` and `cells`), stacked.
    pub fn batch(&self, epoch: u64, batch: &TokenBatch) -> Result<RdaBatch> {
        let examples = batch
            .counts
            .iter()
            .zip(&batch.cells)
            .map(|(c, &cell)| self.example(epoch, cell, c))
            .collect::<Result<Vec<_>>>()?;
        RdaBatch::stack(&examples, self.seq_len())
    }
}

/// A stacked batch of examples, row-major `[B, S]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RdaBatch {
    /// Rows `B`.
    pub rows: usize,
    /// Positions `S`.
    pub seq: usize,
    /// Inputs `[B, S]`.
    pub input: Vec<f32>,
    /// Targets `[B, S]`.
    pub target: Vec<f32>,
    /// Loss weights `[B, S]` (1 at masked positions).
    pub weight: Vec<f32>,
    /// Number of masked positions (> 0).
    pub n_masked: usize,
    /// Rows that were downsampled.
    pub n_downsampled: usize,
}

impl RdaBatch {
    /// Stacks examples of `seq` positions; errors when nothing is masked.
    pub fn stack(examples: &[RdaExample], seq: usize) -> Result<Self> {
        let rows = examples.len();
        let mut b = RdaBatch {
            rows,
            seq,
            input: Vec::with_capacity(rows * seq),
            target: Vec::with_capacity(rows * seq),
            weight: Vec::with_capacity(rows * seq),
            n_masked: 0,
            n_downsampled: 0,
        };
        for e in examples {
            if e.input.len() != seq {
                return Err(RdaError::Config(format!(
                    "example of {} positions in a batch of {seq}",
                    e.input.len()
                )));
            }
            b.input.extend_from_slice(&e.input);
            b.target.extend_from_slice(&e.target);
            b.weight.extend(e.mask.iter().map(|&m| f32::from(m)));
            b.n_masked += e.mask.iter().filter(|&&m| m == 1).count();
            b.n_downsampled += usize::from(e.rate.is_some());
        }
        if b.n_masked == 0 {
            return Err(RdaError::Config(
                "no position of the batch is masked: the loss would be undefined".into(),
            ));
        }
        Ok(b)
    }

    /// `(input [B, S], target [B, S, 1], weight [B, S, 1])` on a device.
    pub fn tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 3>, Tensor<B, 3>) {
        let (r, s) = (self.rows, self.seq);
        (
            Tensor::from_data(TensorData::new(self.input.clone(), [r, s]), device),
            Tensor::from_data(TensorData::new(self.target.clone(), [r, s, 1]), device),
            Tensor::from_data(TensorData::new(self.weight.clone(), [r, s, 1]), device),
        )
    }
}
