//! Train / validation / test splits: stratified and seeded, or the user's own from an `obs`
//! column.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Result, TaskError};

/// Cell indices of the three parts, each ascending.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataSplit {
    /// Training cells.
    pub train: Vec<usize>,
    /// Validation cells (model selection, early stopping).
    pub val: Vec<usize>,
    /// Test cells (scored once, with the selected model).
    pub test: Vec<usize>,
}

/// Cells of one class in a part: `round(n · fraction)`, at least 1.
fn part_size(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).round() as usize).max(1)
}

/// Which part of a split a cell or condition belongs to. One vocabulary for every split
/// column ([`FromStr`](std::str::FromStr)): `train`; `val`, `valid` or `validation`; `test`
/// (case and surrounding spaces ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SplitPart {
    /// Training conditions (and the control).
    Train,
    /// Validation conditions (model selection).
    Val,
    /// Test conditions (reported).
    Test,
}

impl SplitPart {
    /// `train`, `val` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }
}

impl std::str::FromStr for SplitPart {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Self::Train),
            "val" | "valid" | "validation" => Ok(Self::Val),
            "test" => Ok(Self::Test),
            _ => Err(format!(
                "'{s}' is not a split part: use train, val (or valid, validation) or test"
            )),
        }
    }
}

/// A stratified split: within every class, the cells are shuffled with one generator seeded
/// by `seed` (classes in code order), then `round(n_c · test_fraction)` (at least 1) go to
/// test, `round(n_c · val_fraction)` (at least 1) to validation and the rest (at least 1) to
/// training. The same codes and seed give the same split on any machine.
///
/// `codes[i]` is the class of cell `i` (an index into `classes`). A class with fewer cells
/// than the three parts need is an error naming it.
pub fn stratified_split(
    codes: &[u32],
    classes: &[String],
    val_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<DataSplit> {
    let ok = |f: f64| f.is_finite() && f > 0.0 && f < 1.0;
    if !ok(val_fraction) || !ok(test_fraction) || val_fraction + test_fraction >= 1.0 {
        return Err(TaskError::Config(format!(
            "`val_fraction` {val_fraction} and `test_fraction` {test_fraction}: each must be in (0, 1) and their sum below 1"
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (i, &c) in codes.iter().enumerate() {
        let list = by_class.get_mut(c as usize).ok_or_else(|| {
            TaskError::Labels(format!(
                "cell {i} has class code {c}, but there are {} classes",
                classes.len()
            ))
        })?;
        list.push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = DataSplit {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (c, cells) in by_class.iter_mut().enumerate() {
        let n = cells.len();
        let (nt, nv) = (part_size(n, test_fraction), part_size(n, val_fraction));
        if n < nt + nv + 1 {
            return Err(TaskError::Labels(format!(
                "class '{}' has {n} cell{}: the split asked (val {val_fraction}, test {test_fraction}) needs at least {} \
                 (one for training and {nv} + {nt} held out); drop the class, merge it, or give a `split_column`",
                classes[c],
                if n == 1 { "" } else { "s" },
                nt + nv + 1
            )));
        }
        cells.shuffle(&mut rng);
        split.test.extend_from_slice(&cells[..nt]);
        split.val.extend_from_slice(&cells[nt..nt + nv]);
        split.train.extend_from_slice(&cells[nt + nv..]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// The user's split: `values[i]` is `train`, `val` or `test` for cell `i`. Any other value is
/// an error naming the cell (`cell_name(i)`), and so is an empty training or validation part
/// or a class of `codes` that has no training cell.
pub fn split_from_values(
    values: &[String],
    column: &str,
    cell_name: &dyn Fn(usize) -> String,
    codes: &[u32],
    classes: &[String],
) -> Result<DataSplit> {
    let mut split = DataSplit {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (i, v) in values.iter().enumerate() {
        match v.parse::<SplitPart>() {
            Ok(SplitPart::Train) => split.train.push(i),
            Ok(SplitPart::Val) => split.val.push(i),
            Ok(SplitPart::Test) => split.test.push(i),
            Err(_) => {
                return Err(TaskError::Split(format!(
                    "obs/{column} holds '{v}' for cell {i} ('{}'): the split column must hold train, val (or valid, validation) or test",
                    cell_name(i)
                )));
            }
        }
    }
    for (name, part) in [
        ("train", &split.train),
        ("val", &split.val),
        ("test", &split.test),
    ] {
        if part.is_empty() {
            return Err(TaskError::Split(format!(
                "obs/{column} has no '{name}' cell: train, val and test all need cells"
            )));
        }
    }
    let mut in_train = vec![false; classes.len()];
    for &i in &split.train {
        if let Some(t) = in_train.get_mut(codes[i] as usize) {
            *t = true;
        }
    }
    if let Some(c) = in_train.iter().position(|&t| !t) {
        return Err(TaskError::Split(format!(
            "class '{}' has no cell in the training part of obs/{column}: the classifier could not learn it",
            classes[c]
        )));
    }
    Ok(split)
}
