//! Tokenized cells kept in memory for the epochs of a fine-tuning run: the model input values
//! `[G + 2]` of every cell stored sparsely (a gene with zero count has value 0), densified per
//! batch.

use aido_tokenize::{TokenBatch, Tokenizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::Result;

/// Model input of many cells, sparse by row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenizedCells {
    /// Values per cell (`S = G + 2`).
    pub seq_len: usize,
    indptr: Vec<usize>,
    positions: Vec<u32>,
    values: Vec<f32>,
    /// Input cell index of every row.
    pub cells: Vec<usize>,
}

impl TokenizedCells {
    /// An empty store for rows of `seq_len` values.
    pub fn new(seq_len: usize) -> Self {
        TokenizedCells {
            seq_len,
            indptr: vec![0],
            ..Default::default()
        }
    }

    /// Appends one dense row `[S]` of input cell `cell`.
    pub fn push(&mut self, row: &[f32], cell: usize) {
        for (p, &v) in row.iter().enumerate() {
            if v != 0.0 {
                self.positions.push(p as u32);
                self.values.push(v);
            }
        }
        self.indptr.push(self.positions.len());
        self.cells.push(cell);
    }

    /// Appends every row of a tokenizer batch.
    pub fn push_batch(&mut self, b: &TokenBatch) {
        for (r, &cell) in b.values.rows().into_iter().zip(&b.cells) {
            for (p, &v) in r.iter().enumerate() {
                if v != 0.0 {
                    self.positions.push(p as u32);
                    self.values.push(v);
                }
            }
            self.indptr.push(self.positions.len());
            self.cells.push(cell);
        }
    }

    /// Tokenizes everything `tok` reads, `batch` cells at a time.
    pub fn read_all(tok: &mut Tokenizer<'_>, batch: usize) -> Result<Self> {
        let mut out = TokenizedCells::new(tok.alignment().present().len());
        while let Some(b) = tok.next_batch(batch.max(1))? {
            out.push_batch(&b);
        }
        Ok(out)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Rows `rows` as a dense row-major `[rows.len() × S]` buffer.
    pub fn dense(&self, rows: &[usize]) -> Vec<f32> {
        let s = self.seq_len;
        let mut out = vec![0.0f32; rows.len() * s];
        for (k, &r) in rows.iter().enumerate() {
            let (a, b) = (self.indptr[r], self.indptr[r + 1]);
            for (&p, &v) in self.positions[a..b].iter().zip(&self.values[a..b]) {
                out[k * s + p as usize] = v;
            }
        }
        out
    }

    /// Rows `rows` as a `[rows.len(), S]` tensor.
    pub fn tensor<B: Backend>(&self, rows: &[usize], device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(self.dense(rows), [rows.len(), self.seq_len]),
            device,
        )
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.values.len() * 8 + self.indptr.len() * 8 + self.cells.len() * 8
    }
}
