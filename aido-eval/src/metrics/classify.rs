//! Classification metrics, as scikit-learn 1.9 defines them: accuracy, per-class F1 over the
//! union of true and predicted labels (a class only predicted counts with F1 = 0), macro F1
//! (unweighted mean), and the confusion matrix (rows = true, columns = predicted).

use std::collections::BTreeMap;

use crate::error::{EvalError, Result};

/// What a classification report holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassificationReport {
    /// Fraction of cells predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// F1 of every label in the union of true and predicted labels.
    pub per_class_f1: BTreeMap<String, f64>,
    /// The confusion matrix over `labels` (sorted union): `matrix[t][p]` cells of true
    /// label `labels[t]` predicted as `labels[p]`.
    pub confusion: Confusion,
}

/// A confusion matrix with its label order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Confusion {
    /// Labels, sorted (byte order, as sklearn's `unique_labels` for strings).
    pub labels: Vec<String>,
    /// Counts, `[true][predicted]`.
    pub matrix: Vec<Vec<u64>>,
}

/// What to return for a class whose F1 has a zero denominator (possible only for a class
/// passed in `labels` that occurs in neither input): sklearn's `zero_division`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ZeroDivision {
    /// 0.0 (sklearn's default "warn").
    Zero,
    /// 1.0.
    One,
    /// NaN, and the class is left out of the macro mean.
    Nan,
}

fn check<S: AsRef<str>>(truth: &[S], pred: &[S]) -> Result<()> {
    if truth.len() != pred.len() {
        return Err(EvalError::LengthMismatch {
            what: "y_true against y_pred".into(),
            a: truth.len(),
            b: pred.len(),
        });
    }
    if truth.is_empty() {
        return Err(EvalError::InvalidArgument(
            "classification metrics of zero cells".into(),
        ));
    }
    Ok(())
}

/// Confusion matrix over `labels` (default: the sorted union of both inputs).
pub fn confusion<S: AsRef<str>>(
    truth: &[S],
    pred: &[S],
    labels: Option<&[String]>,
) -> Result<Confusion> {
    check(truth, pred)?;
    let labels: Vec<String> = match labels {
        Some(l) => l.to_vec(),
        None => {
            let mut u: Vec<String> = truth
                .iter()
                .chain(pred)
                .map(|s| s.as_ref().to_string())
                .collect();
            u.sort_unstable();
            u.dedup();
            u
        }
    };
    let index: std::collections::HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let k = labels.len();
    let mut matrix = vec![vec![0u64; k]; k];
    for (t, p) in truth.iter().zip(pred) {
        if let (Some(&i), Some(&j)) = (index.get(t.as_ref()), index.get(p.as_ref())) {
            matrix[i][j] += 1;
        }
    }
    Ok(Confusion { labels, matrix })
}

/// Fraction of cells whose prediction equals the truth.
pub fn accuracy<S: AsRef<str>>(truth: &[S], pred: &[S]) -> Result<f64> {
    check(truth, pred)?;
    let ok = truth
        .iter()
        .zip(pred)
        .filter(|(t, p)| t.as_ref() == p.as_ref())
        .count();
    Ok(ok as f64 / truth.len() as f64)
}

/// Per-class F1 `2tp / (2tp + fp + fn)` over the confusion matrix's labels.
pub fn f1_per_class(c: &Confusion, zero_division: ZeroDivision) -> Vec<f64> {
    let k = c.labels.len();
    (0..k)
        .map(|i| {
            let tp = c.matrix[i][i] as f64;
            let fn_: f64 = (0..k)
                .filter(|&j| j != i)
                .map(|j| c.matrix[i][j] as f64)
                .sum();
            let fp: f64 = (0..k)
                .filter(|&j| j != i)
                .map(|j| c.matrix[j][i] as f64)
                .sum();
            let den = 2.0 * tp + fp + fn_;
            if den == 0.0 {
                match zero_division {
                    ZeroDivision::Zero => 0.0,
                    ZeroDivision::One => 1.0,
                    ZeroDivision::Nan => f64::NAN,
                }
            } else {
                2.0 * tp / den
            }
        })
        .collect()
}

/// Macro F1: the unweighted mean of the per-class F1, NaN classes left out (sklearn's
/// `_nanaverage`).
pub fn macro_f1_of(per_class: &[f64]) -> f64 {
    let v: Vec<f64> = per_class.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Macro F1 over the union of labels (sklearn `f1_score(average="macro")`).
pub fn macro_f1<S: AsRef<str>>(truth: &[S], pred: &[S]) -> Result<f64> {
    let c = confusion(truth, pred, None)?;
    Ok(macro_f1_of(&f1_per_class(&c, ZeroDivision::Zero)))
}

/// Accuracy, per-class and macro F1 and the confusion matrix in one pass.
pub fn classification_report<S: AsRef<str>>(
    truth: &[S],
    pred: &[S],
) -> Result<ClassificationReport> {
    let c = confusion(truth, pred, None)?;
    let f1 = f1_per_class(&c, ZeroDivision::Zero);
    Ok(ClassificationReport {
        accuracy: accuracy(truth, pred)?,
        macro_f1: macro_f1_of(&f1),
        per_class_f1: c.labels.iter().cloned().zip(f1.iter().copied()).collect(),
        confusion: c,
    })
}
