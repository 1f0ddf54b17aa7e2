//! Class weights of the cross-entropy (SPEC-tasks §1).
//!
//! The paper prints `w_i = max(N_max / N_i, 50)`, which would give every class a weight of at
//! least 50 — uniform weighting scaled by 50 for most classes, so almost certainly a typo for
//! a cap. We implement the cap: `w_i = min(N_max / N_i, cap)` with `cap = 50` by default
//! (`capped:50`); the largest class has weight 1 and no class more than 50.

use crate::error::{Result, TaskError};

/// How the classes of the loss are weighted; `N_i` counts class `i` in the training split.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ClassWeights {
    /// `min(N_max / N_i, cap)` (the paper's weighting read as a cap).
    Capped(f64),
    /// scikit-learn's `class_weight="balanced"`: `n / (C · N_i)`.
    Balanced,
    /// All 1.
    None,
}

impl Default for ClassWeights {
    fn default() -> Self {
        ClassWeights::Capped(50.0)
    }
}

impl std::fmt::Display for ClassWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassWeights::Capped(c) => write!(f, "capped:{c}"),
            ClassWeights::Balanced => write!(f, "balanced"),
            ClassWeights::None => write!(f, "none"),
        }
    }
}

impl std::str::FromStr for ClassWeights {
    type Err = String;
    /// `capped:CAP` (`capped` alone: 50), `balanced`, `none`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("class weights '{s}': expected capped:CAP, balanced or none");
        match s.split(':').collect::<Vec<_>>().as_slice() {
            ["capped"] => Ok(ClassWeights::Capped(50.0)),
            ["capped", c] => {
                let c: f64 = c.parse().map_err(|_| bad())?;
                if c.is_finite() && c >= 1.0 {
                    Ok(ClassWeights::Capped(c))
                } else {
                    Err(format!("class weights '{s}': the cap must be a number ≥ 1"))
                }
            }
            ["balanced"] => Ok(ClassWeights::Balanced),
            ["none"] => Ok(ClassWeights::None),
            _ => Err(bad()),
        }
    }
}

impl ClassWeights {
    /// The weight of every class from its training count `counts[i]`; a class with no
    /// training cell is an error naming it.
    pub fn weights(&self, counts: &[usize], classes: &[String]) -> Result<Vec<f64>> {
        if let Some(i) = counts.iter().position(|&c| c == 0) {
            return Err(TaskError::Labels(format!(
                "class '{}' has no training cell",
                classes.get(i).map_or("?", String::as_str)
            )));
        }
        let n: usize = counts.iter().sum();
        let max = counts.iter().copied().max().unwrap_or(1) as f64;
        let c = counts.len() as f64;
        Ok(counts
            .iter()
            .map(|&ni| {
                let ni = ni as f64;
                match self {
                    ClassWeights::Capped(cap) => (max / ni).min(*cap),
                    ClassWeights::Balanced => n as f64 / (c * ni),
                    ClassWeights::None => 1.0,
                }
            })
            .collect())
    }
}
