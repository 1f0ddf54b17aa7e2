//! Every constant of the objective, with its origin.

use serde::{Deserialize, Serialize};

use crate::{RdaError, Result};

/// scFoundation's replacement of chosen positions (BERT-style): of the chosen positions, a
/// fraction gets another gene's input value of the same cell and a fraction keeps its value;
/// the rest get the mask value. Not mentioned by the AIDO.Cell paper: off by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Replacement {
    /// Fraction of chosen positions given a random other value (scFoundation: 0.1).
    pub random: f64,
    /// Fraction of chosen positions left unchanged (scFoundation: 0.1).
    pub keep: f64,
}

/// The RDA objective's constants. Defaults: the AIDO.Cell paper's values where it gives them
/// (marked *paper*), our choices otherwise (marked *ours*).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RdaConfig {
    /// *paper*: probability that a cell is downsampled (`u ~ Bernoulli(0.5)`).
    pub downsample_prob: f64,
    /// *paper*: Beta(α, β) of the thinning rate, α = 2.
    pub beta_alpha: f64,
    /// *paper*: β = 2.
    pub beta_beta: f64,
    /// *ours*: cells with fewer raw counts are never downsampled (1,000 UMIs).
    pub min_total_for_downsampling: f32,
    /// *paper*: fraction of the measured genes non-zero in the input that are masked (0.30).
    pub mask_nonzero_fraction: f64,
    /// *paper*: fraction of the measured genes zero in the input that are masked (0.03).
    pub mask_zero_fraction: f64,
    /// *ours*: at least this many non-zero genes are masked when the cell has any (1), so that
    /// every example contributes to the loss.
    pub min_masked_nonzero: usize,
    /// scFoundation's 80/10/10 replacement; `None` (the default) masks every chosen position.
    pub replacement: Option<Replacement>,
    /// *paper* (SPEC-model §1): normalization scale, 1e4.
    pub scale: f32,
    /// *paper* (SPEC-model §1): upper clip of every value, 20.
    pub clip: f32,
}

impl Default for RdaConfig {
    fn default() -> Self {
        RdaConfig {
            downsample_prob: 0.5,
            beta_alpha: 2.0,
            beta_beta: 2.0,
            min_total_for_downsampling: 1000.0,
            mask_nonzero_fraction: 0.30,
            mask_zero_fraction: 0.03,
            min_masked_nonzero: 1,
            replacement: None,
            scale: 1.0e4,
            clip: 20.0,
        }
    }
}

impl RdaConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(RdaError::Config(format!("{name} = {v} is not within 0..1")))
            }
        };
        unit("downsample_prob", self.downsample_prob)?;
        unit("mask_nonzero_fraction", self.mask_nonzero_fraction)?;
        unit("mask_zero_fraction", self.mask_zero_fraction)?;
        if !(self.beta_alpha > 0.0 && self.beta_beta > 0.0) {
            return Err(RdaError::Config(format!(
                "Beta({}, {}) needs positive parameters",
                self.beta_alpha, self.beta_beta
            )));
        }
        if let Some(r) = self.replacement {
            unit("replacement.random", r.random)?;
            unit("replacement.keep", r.keep)?;
            unit("replacement.random + keep", r.random + r.keep)?;
        }
        if !(self.scale > 0.0 && self.clip > 0.0) {
            return Err(RdaError::Config("scale and clip must be positive".into()));
        }
        Ok(())
    }
}
