//! Labels as integer codes: the form every metric takes.

use std::collections::HashMap;

/// A labelling of `n` cells: a code per cell into `names`.
///
/// `names` are sorted (byte order, as numpy's `np.unique` sorts strings), so code order equals
/// scikit-learn's label order and reports list classes the way sklearn does.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    /// Code of each cell, `< names.len()`.
    pub codes: Vec<u32>,
    /// Distinct label names, sorted.
    pub names: Vec<String>,
}

impl Labels {
    /// Encodes string labels (sorted distinct names).
    pub fn from_strings<S: AsRef<str>>(values: &[S]) -> Labels {
        let mut names: Vec<String> = values.iter().map(|s| s.as_ref().to_string()).collect();
        names.sort_unstable();
        names.dedup();
        let index: HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let codes = values.iter().map(|s| index[s.as_ref()]).collect();
        Labels { codes, names }
    }

    /// Encodes integer labels (e.g. cluster ids); names are the decimal numbers, sorted
    /// numerically.
    pub fn from_ints(values: &[i64]) -> Labels {
        let mut distinct: Vec<i64> = values.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let index: HashMap<i64, u32> = distinct
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect();
        Labels {
            codes: values.iter().map(|v| index[v]).collect(),
            names: distinct.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// Codes `0..k` given as they are, with names `"0".."k-1"` (cluster ids already dense).
    pub fn from_codes(codes: Vec<u32>) -> Labels {
        let k = codes.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        Labels {
            codes,
            names: (0..k).map(|i| i.to_string()).collect(),
        }
    }

    /// A column's labels in scanpy's category order (what `sc.pl.umap` colours and lists): a
    /// categorical's own categories, all of them, in their order; other columns' distinct
    /// values sorted (as `strings_to_categoricals` orders them). A missing value is an error
    /// carrying the cell's row.
    pub fn in_category_order(c: &aido_tokenize::ObsColumn) -> std::result::Result<Labels, usize> {
        if let Some(i) = (0..c.len()).find(|&i| c.is_missing(i)) {
            return Err(i);
        }
        match c {
            aido_tokenize::ObsColumn::Categorical {
                codes, categories, ..
            } => Ok(Labels {
                codes: codes.iter().map(|&x| x as u32).collect(),
                names: categories.clone(),
            }),
            _ => Labels::from_obs_column(c),
        }
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Number of distinct labels that occur.
    pub fn n_distinct(&self) -> usize {
        let mut seen = vec![false; self.names.len()];
        for &c in &self.codes {
            seen[c as usize] = true;
        }
        seen.into_iter().filter(|&s| s).count()
    }

    /// Number of cells per code.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.names.len()];
        for &x in &self.codes {
            c[x as usize] += 1;
        }
        c
    }

    /// The name of cell `i`'s label.
    pub fn name_of(&self, i: usize) -> &str {
        &self.names[self.codes[i] as usize]
    }

    /// The cells `keep`, re-encoded over the labels they hold.
    pub fn select(&self, keep: &[usize]) -> Labels {
        let v: Vec<&str> = keep.iter().map(|&i| self.name_of(i)).collect();
        Labels::from_strings(&v)
    }
}

impl Labels {
    /// Labels from an `obs` column: categories (or values as text). A missing value (a
    /// categorical code −1, a NaN float, a masked nullable value) is an error carrying the cell's
    /// row.
    pub fn from_obs_column(c: &aido_tokenize::ObsColumn) -> std::result::Result<Labels, usize> {
        if let Some(i) = (0..c.len()).find(|&i| c.is_missing(i)) {
            return Err(i);
        }
        let text: Vec<String> = (0..c.len()).map(|i| c.display(i)).collect();
        Ok(Labels::from_strings(&text))
    }
}
