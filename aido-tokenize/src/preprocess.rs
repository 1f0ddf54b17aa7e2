//! Expression preprocessing exactly as SPEC-model §1 (the reference `preprocess_counts`).

/// Reserved input value: mask (selects the learned mask vector).
pub const MASK_VALUE: f32 = -1.0;
/// Reserved input value: padding (selects the learned pad vector).
pub const PAD_VALUE: f32 = -2.0;

/// How one cell's aligned counts become model input values.
///
/// For aligned raw counts `c` over the `G` vocabulary genes (f32 throughout, in this order):
/// `total = Σ c`; `x_g = ln(1 + (c_g / total) · scale)`; depth `d = max(log10(total), floor)`;
/// input `[x_0 … x_{G-1}, d (T), d (S)]`, each clipped at `clip`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessConfig {
    /// Lower bound of the depth tokens; `Some(5.0)` is the reference's inference behaviour,
    /// `None` keeps the real `log10(total)` (needed for read-depth-aware pretraining).
    pub depth_floor: Option<f32>,
    /// Normalization scale (1e4; the authors call it "CPM").
    pub scale: f32,
    /// Upper clip of every value (20).
    pub clip: f32,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            depth_floor: Some(5.0),
            scale: 1.0e4,
            clip: 20.0,
        }
    }
}

impl PreprocessConfig {
    /// The normalized value of one gene with count `c` in a cell of `total` counts.
    #[inline]
    pub fn gene_value(&self, c: f32, total: f32) -> f32 {
        ((c / total) * self.scale).ln_1p().min(self.clip)
    }

    /// The depth token value of a cell with `total` counts.
    #[inline]
    pub fn depth_value(&self, total: f32) -> f32 {
        let d = total.log10();
        let d = match self.depth_floor {
            Some(f) => d.max(f),
            None => d,
        };
        d.min(self.clip)
    }

    /// Fills `out` (`[G + 2]`, zeroed by the caller) from a sparse aligned cell:
    /// `(position, count)` pairs whose counts sum to `total > 0`.
    pub fn fill_row(
        &self,
        entries: impl Iterator<Item = (usize, f32)>,
        total: f32,
        out: &mut [f32],
    ) {
        let g = out.len() - 2;
        for (p, c) in entries {
            out[p] = self.gene_value(c, total);
        }
        let d = self.depth_value(total);
        out[g] = d;
        out[g + 1] = d;
    }

    /// Preprocesses a dense aligned cell (`counts: [G]`) into `[G + 2]` values.
    /// Returns `None` when the total is zero (the reference would produce NaN).
    pub fn dense_row(&self, counts: &[f32]) -> Option<Vec<f32>> {
        let total: f32 = counts.iter().sum();
        if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let mut out = vec![0.0; counts.len() + 2];
        self.fill_row(
            counts
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, c)| *c != 0.0),
            total,
            &mut out,
        );
        Some(out)
    }
}
