//! The metrics log: one JSON object per line (`metrics.jsonl`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{io, write_atomic};
use crate::{Result, TrainError};

/// One logged step.
///
/// `step` counts optimizer updates. For `step ≥ 1`, `train_loss` is the masked MSE of the
/// batch of update `step`, computed by the forward pass of that update (before its parameter
/// change), averaged over all masked positions of its `batch_size × grad_accum` cells. The
/// line `step = 0` describes the model before any update: its `val_loss`, and as `train_loss`
/// the loss of the first training batch (the same forward that update 1 uses). `val_loss` is
/// the masked MSE over all masked positions of the fixed validation examples, after `step`
/// updates; it is present on validation steps only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Updates done.
    pub step: u64,
    /// Training loss (see the type's docs).
    pub train_loss: f64,
    /// Validation loss, on validation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    /// Learning rate of this update.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training cells per second of this update (wall clock, forward + backward + update).
    pub cells_per_s: f64,
    /// Training cells consumed so far (the data position).
    pub cells_seen: u64,
}

/// Appends lines to `metrics.jsonl`, flushed after each one.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Starts a new log (truncating any old one).
    pub fn create(path: &Path) -> Result<Self> {
        write_atomic(path, b"")?;
        Self::append_to(path)
    }

    /// Continues a log after a resume from `step`: lines with a larger step (written after the
    /// checkpoint by the interrupted run) are dropped, so the log reads as one run. A torn last
    /// line (the interrupted run died mid-write, or the disk filled: no final newline and not
    /// valid JSON) is dropped too; a malformed line anywhere else is an error naming it.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        let text = if path.exists() {
            fs::read_to_string(path).map_err(io(path))?
        } else {
            String::new()
        };
        let torn_tail = !text.is_empty() && !text.ends_with('\n');
        let n_lines = text.lines().count();
        let mut keep = String::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let m: serde_json::Value = match serde_json::from_str(line) {
                Ok(m) => m,
                Err(_) if torn_tail && i + 1 == n_lines => {
                    tracing::warn!(
                        "{}: dropping the torn last line {} of the interrupted run",
                        path.display(),
                        i + 1
                    );
                    continue;
                }
                Err(e) => {
                    return Err(TrainError::Checkpoint {
                        path: path.to_path_buf(),
                        detail: format!("line {}: {e}", i + 1),
                    });
                }
            };
            let s = m.get("step").and_then(serde_json::Value::as_u64);
            if s.is_some_and(|s| s <= step) {
                keep.push_str(line);
                keep.push('\n');
            }
        }
        write_atomic(path, keep.as_bytes())?;
        Self::append_to(path)
    }

    fn append_to(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line.
    pub fn write(&mut self, m: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(m).map_err(|e| TrainError::Checkpoint {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io(&self.path))
    }
}

/// Reads a metrics log back.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::Checkpoint {
                path: path.to_path_buf(),
                detail: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn line(step: u64) -> String {
        let m = StepMetrics {
            step,
            train_loss: 1.0,
            val_loss: None,
            lr: 1e-3,
            grad_norm: 0.5,
            cells_per_s: 10.0,
            cells_seen: step * 8,
        };
        serde_json::to_string(&m).unwrap() + "\n"
    }

    /// A run killed mid-write leaves a torn last line; resuming drops it (it failed before the
    /// fix: "line 3: EOF while parsing") but still refuses a malformed line elsewhere.
    #[test]
    fn resume_drops_a_torn_last_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let full = line(3);
        fs::write(
            &p,
            format!("{}{}{}", line(1), line(2), &full[..full.len() / 2]),
        )
        .unwrap();
        let mut log = MetricsLog::resume(&p, 2).unwrap();
        log.write(&read_metrics(&p).unwrap()[1]).unwrap();
        let back = read_metrics(&p).unwrap();
        assert_eq!(
            back.iter().map(|m| m.step).collect::<Vec<_>>(),
            vec![1, 2, 2]
        );
        fs::write(&p, format!("{}{{broken\n{}", line(1), line(2))).unwrap();
        let e = MetricsLog::resume(&p, 2).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
