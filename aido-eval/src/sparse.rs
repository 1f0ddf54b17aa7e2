//! A square sparse matrix in CSR form: the kNN distance graph and UMAP connectivities
//! (scanpy's `obsp/distances` and `obsp/connectivities`).

/// `n × n` CSR with `f32` values; columns sorted within each row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CsrMatrix {
    /// Rows (= columns).
    pub n: usize,
    /// Row pointers, `n + 1` entries.
    pub indptr: Vec<usize>,
    /// Column of each stored value.
    pub indices: Vec<u32>,
    /// Stored values.
    pub data: Vec<f32>,
}

impl CsrMatrix {
    /// Builds from `(row, col, value)` triplets; duplicates are summed, zeros dropped.
    pub fn from_triplets(n: usize, mut t: Vec<(u32, u32, f32)>) -> CsrMatrix {
        t.sort_unstable_by_key(|&(r, c, _)| (r, c));
        let mut indptr = vec![0usize; n + 1];
        let mut indices = Vec::with_capacity(t.len());
        let mut data: Vec<f32> = Vec::with_capacity(t.len());
        let mut last: Option<(u32, u32)> = None;
        for (r, c, v) in t {
            if last == Some((r, c)) {
                if let Some(x) = data.last_mut() {
                    *x += v;
                }
                continue;
            }
            last = Some((r, c));
            indices.push(c);
            data.push(v);
            indptr[r as usize + 1] += 1;
        }
        for i in 0..n {
            indptr[i + 1] += indptr[i];
        }
        let mut m = CsrMatrix {
            n,
            indptr,
            indices,
            data,
        };
        m.eliminate_zeros();
        m
    }

    /// Drops stored zeros.
    pub fn eliminate_zeros(&mut self) {
        let mut indptr = vec![0usize; self.n + 1];
        let mut w = 0;
        for i in 0..self.n {
            for p in self.indptr[i]..self.indptr[i + 1] {
                if self.data[p] != 0.0 {
                    self.indices[w] = self.indices[p];
                    self.data[w] = self.data[p];
                    w += 1;
                }
            }
            indptr[i + 1] = w;
        }
        self.indices.truncate(w);
        self.data.truncate(w);
        self.indptr = indptr;
    }

    /// Number of stored values.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }

    /// Row `i`: columns and values.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Row sums in f64.
    pub fn row_sums(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| self.row(i).1.iter().map(|&v| f64::from(v)).sum())
            .collect()
    }

    /// Connected-component label of every node (edges in either direction), components
    /// numbered in order of their lowest node; and the count.
    pub fn components(&self) -> (Vec<usize>, usize) {
        // union-find over stored entries
        let mut parent: Vec<usize> = (0..self.n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for i in 0..self.n {
            for &j in self.row(i).0 {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j as usize));
                if a != b {
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    parent[hi] = lo;
                }
            }
        }
        let mut label = vec![usize::MAX; self.n];
        let mut k = 0;
        let mut out = vec![0usize; self.n];
        for (i, o) in out.iter_mut().enumerate() {
            let r = find(&mut parent, i);
            if label[r] == usize::MAX {
                label[r] = k;
                k += 1;
            }
            *o = label[r];
        }
        (out, k)
    }

    /// The sub-matrix over `nodes` (in that order).
    pub fn subgraph(&self, nodes: &[usize]) -> CsrMatrix {
        let mut local = vec![u32::MAX; self.n];
        for (l, &i) in nodes.iter().enumerate() {
            local[i] = l as u32;
        }
        let mut t = Vec::new();
        for (l, &i) in nodes.iter().enumerate() {
            let (c, v) = self.row(i);
            for (&j, &x) in c.iter().zip(v) {
                let lj = local[j as usize];
                if lj != u32::MAX {
                    t.push((l as u32, lj, x));
                }
            }
        }
        CsrMatrix::from_triplets(nodes.len(), t)
    }
}
