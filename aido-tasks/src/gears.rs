//! The GEARS perturbation model in burn (Roohani et al. 2023; upstream `gears/model.py`
//! @f374e43e, `GEARS_Model`), with the encoder's gene embeddings as an optional backbone.
//!
//! For `B` cells over `G` genes with hidden size `H`:
//!
//! 1. gene embeddings `[B, G, H]`: learned (`gene_emb`, GEARS alone) or the frozen encoder's
//!    per-gene embeddings of the control cell `[B, G, D]` projected by `gene_proj` (the paper's
//!    route); batch norm over the `B·G` rows, ReLU;
//! 2. plus `0.2 ×` positional embeddings (`emb_pos`) through SGConv over the co-expression graph
//!    (see [`CoexpressionMode`] for GEARS's first-cell behaviour), then `emb_trans_v2` (MLP);
//! 3. perturbation embeddings (`pert_emb`, one per gene) through SGConv over the gene–gene graph
//!    (GO Jaccard by default); a cell's perturbations are **summed**, the sums of the batch go
//!    through `pert_fuse` (MLP, batch norm over the perturbed cells) and are added to every gene
//!    of that cell;
//! 4. batch norm, ReLU, `recovery_w` (MLP `H → 2H → H`), a per-gene decoder
//!    (`indv_w1 [G, H]`, `indv_b1 [G]`) → `[B, G]`; the cross-gene state (MLP `G → H → H`) is
//!    concatenated to every gene and a second per-gene decoder (`indv_w2 [G, H + 1]`,
//!    `indv_b2 [G]`) gives the change;
//! 5. output = control expression `x` + change, `[B, G]`.
//!
//! GEARS's `MLP` is `Linear → BatchNorm → ReLU` per layer with the last ReLU dropped; its
//! embeddings use `max_norm=True`: torch renormalizes the looked-up rows to norm ≤ 1 **in the
//! stored weight** on every forward pass. Here the stored rows are renormalized after
//! initialization and after every optimizer step ([`Gears::renormalize_embeddings`]), and the
//! lookup scales rows with a detached factor (a no-op on renormalized rows; it keeps a model
//! saved before the renormalization behaving as it was trained). SGConv is PyG's with `K = 1`:
//! `X' = Lin(D̂^-½ Â D̂^-½ X)`, `Â` the weighted graph plus unit self-loops where a node has none.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use crate::perturb::GeneEdge;
use crate::{Result, TaskError};

/// How the co-expression graph reaches the cells of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoexpressionMode {
    /// GEARS's code (the default): positional embeddings are computed for `B·G` nodes but the
    /// graph only indexes nodes `0..G`, so only the **first cell of each batch** gets
    /// graph-propagated embeddings; the others get `Linear(emb_pos)` (PyG's unit self-loop).
    FirstCell,
    /// The corrected behaviour: every cell gets the graph-propagated embeddings.
    AllCells,
}

impl CoexpressionMode {
    /// The name in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstCell => "first_cell",
            Self::AllCells => "all_cells",
        }
    }
}

/// A graph normalized for SGConv, on the device: edge sources, targets and weights
/// `D̂^-½ w D̂^-½` (unit self-loops added where missing).
#[derive(Debug, Clone)]
pub struct SgGraph<B: Backend> {
    host: (Vec<i64>, Vec<i64>, Vec<f32>),
    source: Tensor<B, 1, Int>,
    target: Tensor<B, 1, Int>,
    weight: Tensor<B, 2>,
    nodes: usize,
}

impl<B: Backend> SgGraph<B> {
    /// Normalizes `edges` over `nodes` nodes as PyG's `gcn_norm(add_self_loops=True)`.
    pub fn new(edges: &[GeneEdge], nodes: usize, device: &B::Device) -> Result<Self> {
        let mut all: Vec<(usize, usize, f64)> = Vec::with_capacity(edges.len() + nodes);
        let mut has_loop = vec![false; nodes];
        for e in edges {
            if e.source >= nodes || e.target >= nodes {
                return Err(TaskError::Config(format!(
                    "graph edge {} → {} outside the {nodes} genes",
                    e.source, e.target
                )));
            }
            if e.source == e.target {
                has_loop[e.source] = true;
            }
            all.push((e.source, e.target, e.weight));
        }
        for (i, _) in has_loop.iter().enumerate().filter(|(_, h)| !**h) {
            all.push((i, i, 1.0));
        }
        let mut deg = vec![0.0f64; nodes];
        for &(_, t, w) in &all {
            deg[t] += w;
        }
        let inv = |d: f64| if d > 0.0 { d.powf(-0.5) } else { 0.0 };
        let src: Vec<i64> = all.iter().map(|e| e.0 as i64).collect();
        let tgt: Vec<i64> = all.iter().map(|e| e.1 as i64).collect();
        let w: Vec<f32> = all
            .iter()
            .map(|&(s, t, w)| (inv(deg[s]) * w * inv(deg[t])) as f32)
            .collect();
        Ok(Self::from_host((src, tgt, w), nodes, device))
    }

    fn from_host(host: (Vec<i64>, Vec<i64>, Vec<f32>), nodes: usize, device: &B::Device) -> Self {
        let n = host.0.len();
        Self {
            source: Tensor::from_data(TensorData::new(host.0.clone(), [n]), device),
            target: Tensor::from_data(TensorData::new(host.1.clone(), [n]), device),
            weight: Tensor::from_data(TensorData::new(host.2.clone(), [n, 1]), device),
            host,
            nodes,
        }
    }

    /// Nodes of the graph.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The same graph on another backend's device.
    pub fn to_device<B2: Backend>(&self, device: &B2::Device) -> SgGraph<B2> {
        SgGraph::from_host(self.host.clone(), self.nodes, device)
    }

    /// `Â_norm X`: `x [nodes, H]` → `[nodes, H]` (sum over incoming edges).
    pub fn propagate(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [_, h] = x.dims();
        let msg = x.select(0, self.source.clone()) * self.weight.clone();
        Tensor::zeros([self.nodes, h], &msg.device()).select_assign(
            0,
            self.target.clone(),
            msg,
            burn::tensor::IndexingUpdateOp::Add,
        )
    }
}

/// PyG's `SGConv(H, H, K = 1)`: a linear layer after one normalized propagation.
#[derive(Module, Debug)]
pub struct SgConv<B: Backend> {
    /// The linear layer.
    pub lin: Linear<B>,
}

impl<B: Backend> SgConv<B> {
    /// `x [nodes, H]` → `[nodes, H]` over `graph`; `None` = unit self-loops only (`Lin(x)`).
    pub fn forward(&self, x: Tensor<B, 2>, graph: Option<&SgGraph<B>>) -> Tensor<B, 2> {
        match graph {
            Some(g) => self.lin.forward(g.propagate(x)),
            None => self.lin.forward(x),
        }
    }
}

/// torch's `BatchNorm1d` over the rows of `x [N, C]`: in training (an autodiff backend) the
/// batch statistics over the `N` rows normalize, and the running statistics move by the
/// module's momentum towards the batch mean and the **unbiased** batch variance
/// (`var · N / (N − 1)`, as torch keeps it; burn's `BatchNorm` keeps the biased one, which
/// differs by 3 % for the 32 rows of a batch's cross-gene state); outside training the running
/// statistics normalize. The same arithmetic as burn's module, reduced along the rows of the
/// contiguous input instead of through a transposed copy of it.
pub fn batch_norm_rows<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = x.dims()[0];
    batch_norm_rows_of(bn, x, n)
}

/// [`batch_norm_rows`] of `x [N, C]` standing for a batch of `n` rows made of copies of its
/// rows, each repeated `n / N` times (the learned gene embeddings of every cell): the same
/// statistics; `n` sets the running variance's `n / (n − 1)`.
fn batch_norm_rows_of<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 2>, n: usize) -> Tensor<B, 2> {
    let device = x.device();
    let c = x.dims()[1];
    let (mean, var) = if B::ad_enabled(&device) {
        let mean = x.clone().mean_dim(0);
        let var = (x.clone() - mean.clone()).square().mean_dim(0);
        let unbias = if n > 1 {
            n as f64 / (n - 1) as f64
        } else {
            1.0
        };
        let m = bn.momentum;
        let rm = bn
            .running_mean
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - m)
            + mean.clone().detach().reshape([c]).mul_scalar(m);
        let rv = bn
            .running_var
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - m)
            + var.clone().detach().reshape([c]).mul_scalar(m * unbias);
        bn.running_mean.update(rm.detach());
        bn.running_var.update(rv.detach());
        (mean, var)
    } else {
        (
            bn.running_mean.value().to_device(&device).reshape([1, c]),
            bn.running_var.value().to_device(&device).reshape([1, c]),
        )
    };
    let std = var.add_scalar(bn.epsilon).sqrt();
    (x - mean) / std * bn.gamma.val().reshape([1, c]) + bn.beta.val().reshape([1, c])
}

/// GEARS's `MLP(sizes)`: `Linear → BatchNorm → ReLU` per layer, the last ReLU dropped.
#[derive(Module, Debug)]
pub struct GearsMlp<B: Backend> {
    /// The linear layers.
    pub linears: Vec<Linear<B>>,
    /// A batch norm after each linear layer.
    pub norms: Vec<BatchNorm<B>>,
}

impl<B: Backend> GearsMlp<B> {
    /// An MLP through `sizes` (at least two).
    pub fn new(sizes: &[usize], device: &B::Device) -> Self {
        let pairs = sizes.windows(2);
        Self {
            linears: pairs
                .clone()
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            norms: pairs
                .map(|w| BatchNormConfig::new(w[1]).init(device))
                .collect(),
        }
    }

    /// `x [N, sizes[0]]` → `[N, sizes.last()]` (batch statistics over the `N` rows in training).
    pub fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = self.linears.len();
        for (i, (l, bn)) in self.linears.iter().zip(&self.norms).enumerate() {
            x = batch_norm_rows(bn, l.forward(x));
            if i + 1 < n {
                x = relu(x);
            }
        }
        x
    }
}

/// The gene embeddings after their batch norm: one `[G, H]` table shared by the cells (learned)
/// or `[B·G, H]` (a backbone's, per cell).
enum GeneBase<B: Backend> {
    Shared(Tensor<B, 2>),
    PerCell(Tensor<B, 2>),
}

/// Sizes and options of the GEARS model.
#[derive(Config, Debug, PartialEq)]
pub struct GearsConfig {
    /// Genes `G` (outputs, and the first `G` rows of the perturbation table).
    pub genes: usize,
    /// Nodes `P ≥ G` of the perturbation graph and rows of the perturbation table: the `G`
    /// genes, then the graph's genes that were not measured (upstream GEARS's perturbation
    /// table spans its whole GO graph, so a measured gene keeps its unmeasured GO neighbours).
    /// `None`: `G`.
    #[config(default = "None")]
    pub perturbation_nodes: Option<usize>,
    /// Hidden size `H` (GEARS: 64).
    #[config(default = 64)]
    pub hidden: usize,
    /// Width `D` of the backbone's gene embeddings, or `None` for learned gene embeddings.
    #[config(default = "None")]
    pub backbone_dim: Option<usize>,
    /// SGConv layers over the co-expression graph (GEARS: 1).
    #[config(default = 1)]
    pub coexpress_layers: usize,
    /// SGConv layers over the perturbation graph (GEARS: 1).
    #[config(default = 1)]
    pub pert_graph_layers: usize,
    /// Which cells of a batch get the co-expression propagation.
    #[config(default = "CoexpressionMode::FirstCell")]
    pub coexpression: CoexpressionMode,
}

/// The GEARS model (module names follow `gears/model.py`).
#[derive(Module, Debug)]
pub struct Gears<B: Backend> {
    /// Learned gene embeddings `[G, H]` (GEARS alone).
    pub gene_emb: Option<Embedding<B>>,
    /// Projection of the backbone's gene embeddings `D → H`.
    pub gene_proj: Option<Linear<B>>,
    /// Batch norm of the gene embeddings.
    pub bn_emb: BatchNorm<B>,
    /// Positional gene embeddings `[G, H]`.
    pub emb_pos: Embedding<B>,
    /// SGConv layers over the co-expression graph.
    pub layers_emb_pos: Vec<SgConv<B>>,
    /// MLP `H → H → H` after adding the positional embeddings.
    pub emb_trans_v2: GearsMlp<B>,
    /// Perturbation embeddings `[P, H]` (`P` = [`GearsConfig::perturbation_nodes`]).
    pub pert_emb: Embedding<B>,
    /// SGConv layers over the perturbation graph.
    pub sim_layers: Vec<SgConv<B>>,
    /// MLP `H → H → H` of a cell's summed perturbation embeddings.
    pub pert_fuse: GearsMlp<B>,
    /// Batch norm after adding the perturbation.
    pub bn_pert_base: BatchNorm<B>,
    /// MLP `H → 2H → H`.
    pub recovery_w: GearsMlp<B>,
    /// First per-gene decoder weights `[G, H]`.
    pub indv_w1: Param<Tensor<B, 2>>,
    /// First per-gene decoder bias `[G]`.
    pub indv_b1: Param<Tensor<B, 1>>,
    /// MLP `G → H → H` of the cross-gene state.
    pub cross_gene_state: GearsMlp<B>,
    /// Second per-gene decoder weights `[G, H + 1]`.
    pub indv_w2: Param<Tensor<B, 2>>,
    /// Second per-gene decoder bias `[G]`.
    pub indv_b2: Param<Tensor<B, 1>>,
    /// Genes `G`.
    pub genes: usize,
    /// Nodes `P` of the perturbation graph (rows of `pert_emb`).
    pub pert_nodes: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Whether every cell gets the co-expression propagation ([`CoexpressionMode::AllCells`]).
    pub all_cells: bool,
}

/// torch's `xavier_normal_` on a tensor of `shape` with the given fans.
fn xavier<B: Backend, const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    fan_out: usize,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let std = (2.0 / (fan_in + fan_out) as f64).sqrt();
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Normal(0.0, std),
        device,
    ))
}

impl GearsConfig {
    /// A freshly initialized model (torch's initializations: N(0, 1) embeddings, Kaiming-uniform
    /// linear layers, Xavier-normal decoders as GEARS's `xavier_normal_` calls with torch's fans).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Gears<B> {
        let (g, h) = (self.genes, self.hidden);
        let emb = |n| EmbeddingConfig::new(n, h).init(device);
        Gears {
            gene_emb: self.backbone_dim.is_none().then(|| emb(g)),
            gene_proj: self
                .backbone_dim
                .map(|d| LinearConfig::new(d, h).init(device)),
            bn_emb: BatchNormConfig::new(h).init(device),
            emb_pos: emb(g),
            layers_emb_pos: (0..self.coexpress_layers)
                .map(|_| SgConv {
                    lin: LinearConfig::new(h, h).init(device),
                })
                .collect(),
            emb_trans_v2: GearsMlp::new(&[h, h, h], device),
            pert_emb: emb(self.perturbation_nodes.unwrap_or(g).max(g)),
            sim_layers: (0..self.pert_graph_layers)
                .map(|_| SgConv {
                    lin: LinearConfig::new(h, h).init(device),
                })
                .collect(),
            pert_fuse: GearsMlp::new(&[h, h, h], device),
            bn_pert_base: BatchNormConfig::new(h).init(device),
            recovery_w: GearsMlp::new(&[h, 2 * h, h], device),
            // torch fans of [G, H, 1]: in = H, out = G; of [G, 1]: in = 1, out = G.
            indv_w1: xavier([g, h], h, g, device),
            indv_b1: xavier([g], 1, g, device),
            cross_gene_state: GearsMlp::new(&[g, h, h], device),
            // torch fans of [1, G, H+1]: in = G(H+1), out = H+1; of [1, G]: in = G, out = 1.
            indv_w2: xavier([g, h + 1], g * (h + 1), h + 1, device),
            indv_b2: xavier([g], g, 1, device),
            genes: g,
            pert_nodes: self.perturbation_nodes.unwrap_or(g).max(g),
            hidden: h,
            all_cells: self.coexpression == CoexpressionMode::AllCells,
        }
    }
}

/// The two graphs the model reads, normalized on the device.
#[derive(Debug, Clone)]
pub struct GearsGraphs<B: Backend> {
    /// Co-expression graph over the genes.
    pub coexpression: SgGraph<B>,
    /// Perturbation (gene–gene) graph over the genes.
    pub perturbation: SgGraph<B>,
}

impl<B: Backend> GearsGraphs<B> {
    /// Both graphs normalized over `genes` nodes.
    pub fn new(
        coexpression: &[GeneEdge],
        perturbation: &[GeneEdge],
        genes: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Self::with_perturbation_nodes(coexpression, perturbation, genes, genes, device)
    }

    /// The co-expression graph over `genes` nodes, the perturbation graph over
    /// `perturbation_nodes` (≥ `genes`: the genes, then the graph's unmeasured genes).
    pub fn with_perturbation_nodes(
        coexpression: &[GeneEdge],
        perturbation: &[GeneEdge],
        genes: usize,
        perturbation_nodes: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            coexpression: SgGraph::new(coexpression, genes, device)?,
            perturbation: SgGraph::new(perturbation, perturbation_nodes.max(genes), device)?,
        })
    }

    /// The same graphs on another backend's device.
    pub fn to_device<B2: Backend>(&self, device: &B2::Device) -> GearsGraphs<B2> {
        GearsGraphs {
            coexpression: self.coexpression.to_device(device),
            perturbation: self.perturbation.to_device(device),
        }
    }
}

/// The rows of an embedding table, renormalized to norm ≤ 1 (torch's `max_norm=True`; the
/// scale is not differentiated, as torch renormalizes the weight in place).
fn max_norm_rows<B: Backend>(e: &Embedding<B>) -> Tensor<B, 2> {
    let w = e.weight.val();
    let norm = w.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    let scale = norm.clamp_min(1.0).recip().detach();
    w * scale
}

/// `e` with its stored rows renormalized to norm ≤ 1, as torch's `max_norm=True` lookup does in
/// place (`torch.embedding_renorm_`: a row of norm n > 1 is scaled by 1 / (n + 1e-7)); the
/// parameter keeps its id (the optimizer's state) and its gradient requirement.
fn renormalize_rows<B: Backend>(e: Embedding<B>) -> Embedding<B> {
    let weight = e.weight.map(|w| {
        let req = w.is_require_grad();
        // Untracked (burn's `detach` keeps the gradient requirement, and ops on a tracked
        // tensor leave a non-leaf that cannot become a parameter again): the arithmetic stays
        // on the device and the result is a fresh leaf.
        let w = w.set_require_grad(false);
        let norm = w.clone().powf_scalar(2.0).sum_dim(1).sqrt();
        let over = norm.clone().greater_elem(1.0);
        let scale = norm
            .ones_like()
            .mask_where(over, norm.add_scalar(1e-7).recip());
        let w = w * scale;
        if req { w.require_grad() } else { w }
    });
    Embedding { weight }
}

impl<B: Backend> Gears<B> {
    /// The model with its three `max_norm` embedding tables (gene, positional, perturbation)
    /// renormalized in their stored rows, as torch leaves them after every forward pass:
    /// called after initialization and after every optimizer step of [`crate::perturb_fit::fit`],
    /// so Adam and the weight decay act on rows of norm ≤ 1, as upstream's do (scaling at lookup
    /// only would leave the stored rows at their initial norm ≈ √H and every step ≈ √H times
    /// too small).
    pub fn renormalize_embeddings(mut self) -> Self {
        self.gene_emb = self.gene_emb.map(renormalize_rows);
        self.emb_pos = renormalize_rows(self.emb_pos);
        self.pert_emb = renormalize_rows(self.pert_emb);
        self
    }

    /// The perturbation input of `pert_fuse`: the cells with perturbations (indices into
    /// `perts`) and, per such cell, the **sum** of its genes' graph-propagated perturbation
    /// embeddings `[cells, H]` (a double adds both genes); `None` when no cell is perturbed.
    pub fn perturbation_sums(
        &self,
        perts: &[Vec<usize>],
        graphs: &GearsGraphs<B>,
    ) -> Option<(Vec<usize>, Tensor<B, 2>)> {
        if perts.iter().all(Vec::is_empty) {
            return None;
        }
        self.sums_from_table(perts, self.perturbation_table(graphs))
    }

    /// The perturbation table propagated over the perturbation graph, `[P, H]`: what
    /// [`Gears::perturbation_sums`] sums rows of. It does not depend on the cells, so inference
    /// over many batches computes it once ([`Gears::forward_with_table`]).
    pub fn perturbation_table(&self, graphs: &GearsGraphs<B>) -> Tensor<B, 2> {
        let mut pert = max_norm_rows(&self.pert_emb);
        let n = self.sim_layers.len();
        for (i, layer) in self.sim_layers.iter().enumerate() {
            pert = layer.forward(pert, Some(&graphs.perturbation));
            if i + 1 < n {
                pert = relu(pert);
            }
        }
        pert
    }

    /// Per perturbed cell, the sum of its genes' rows of `table` (gathered, then summed by a
    /// `[cells, pairs]` 0/1 matrix).
    fn sums_from_table(
        &self,
        perts: &[Vec<usize>],
        table: Tensor<B, 2>,
    ) -> Option<(Vec<usize>, Tensor<B, 2>)> {
        let cells: Vec<usize> = (0..perts.len()).filter(|&i| !perts[i].is_empty()).collect();
        if cells.is_empty() {
            return None;
        }
        let k = cells.len();
        let pairs: Vec<(usize, usize)> = cells
            .iter()
            .enumerate()
            .flat_map(|(r, &c)| perts[c].iter().map(move |&p| (r, p)))
            .collect();
        let device = table.device();
        let idx: Vec<i64> = pairs.iter().map(|&(_, p)| p as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [pairs.len()]), &device);
        let rows = table.select(0, idx);
        let mut a = vec![0.0f32; k * pairs.len()];
        for (j, &(r, _)) in pairs.iter().enumerate() {
            a[r * pairs.len() + j] = 1.0;
        }
        let a = Tensor::<B, 2>::from_data(TensorData::new(a, [k, pairs.len()]), &device);
        Some((cells, a.matmul(rows)))
    }

    /// Predicted expression `[B, G]` of cells whose control expression is `x [B, G]`
    /// (log-normalized), perturbed at `perts[b]` (gene indices; empty for a control cell).
    /// `backbone [B, G, D]`: the encoder's gene embeddings of each control cell (required with
    /// a backbone, ignored without).
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        perts: &[Vec<usize>],
        backbone: Option<Tensor<B, 3>>,
        graphs: &GearsGraphs<B>,
    ) -> Result<Tensor<B, 2>> {
        self.forward_with_table(x, perts, backbone, graphs, None)
    }

    /// [`Gears::forward`] with the propagated perturbation table computed beforehand
    /// ([`Gears::perturbation_table`] of the same model and graphs; `None`: computed here) —
    /// the same output, for inference over many batches.
    pub fn forward_with_table(
        &self,
        x: Tensor<B, 2>,
        perts: &[Vec<usize>],
        backbone: Option<Tensor<B, 3>>,
        graphs: &GearsGraphs<B>,
        table: Option<&Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        let [b, g] = x.dims();
        let h = self.hidden;
        let device = x.device();
        if g != self.genes || perts.len() != b {
            return Err(TaskError::Config(format!(
                "GEARS input: x [{b}, {g}] with {} perturbation lists, model of {} genes",
                perts.len(),
                self.genes
            )));
        }
        if let Some(&p) = perts.iter().flatten().find(|&&p| p >= self.pert_nodes) {
            return Err(TaskError::Config(format!(
                "perturbed gene index {p} outside the {} perturbation-graph genes",
                self.pert_nodes
            )));
        }
        if graphs.perturbation.nodes() != self.pert_nodes {
            return Err(TaskError::Config(format!(
                "a perturbation graph of {} nodes for a model of {}",
                graphs.perturbation.nodes(),
                self.pert_nodes
            )));
        }
        // 1. gene embeddings: `[G, H]` when learned (the same rows for every cell: batch norm
        // over the B·G rows of B copies has the statistics of the G rows, so it runs on them
        // and the copies are made once, below), `[B·G, H]` from a backbone.
        let base = match (&self.gene_emb, &self.gene_proj, backbone) {
            (Some(e), _, _) => GeneBase::Shared(relu(batch_norm_rows_of(
                &self.bn_emb,
                max_norm_rows(e),
                b * g,
            ))),
            (None, Some(p), Some(f)) => {
                let [fb, fg, d] = f.dims();
                if fb != b || fg != g {
                    return Err(TaskError::Config(format!(
                        "backbone gene embeddings [{fb}, {fg}, {d}] for x [{b}, {g}]"
                    )));
                }
                let emb = p.forward(f.reshape([b * g, d]));
                GeneBase::PerCell(relu(batch_norm_rows(&self.bn_emb, emb)))
            }
            _ => {
                return Err(TaskError::Config(
                    "a backbone model needs the encoder's gene embeddings of the control cells"
                        .into(),
                ));
            }
        };
        // 2. positional embeddings over the co-expression graph.
        let pos0 = max_norm_rows(&self.emb_pos);
        let propagate = |mut pos: Tensor<B, 2>, graph: Option<&SgGraph<B>>| {
            let n = self.layers_emb_pos.len();
            for (i, layer) in self.layers_emb_pos.iter().enumerate() {
                pos = layer.forward(pos, graph);
                if i + 1 < n {
                    pos = relu(pos);
                }
            }
            pos
        };
        let with_graph = propagate(pos0.clone(), Some(&graphs.coexpression)).mul_scalar(0.2);
        // `[G, H]` rows of the first cell and of the others: the same unless first-cell mode.
        let rest = (!(self.all_cells || b == 1)).then(|| propagate(pos0, None).mul_scalar(0.2));
        let base = match (base, rest) {
            (GeneBase::Shared(e), None) => (e + with_graph)
                .unsqueeze_dim::<3>(0)
                .expand([b, g, h])
                .reshape([b * g, h]),
            (GeneBase::Shared(e), Some(rest)) => Tensor::cat(
                vec![
                    (e.clone() + with_graph).unsqueeze_dim::<3>(0),
                    (e + rest).unsqueeze_dim::<3>(0).expand([b - 1, g, h]),
                ],
                0,
            )
            .reshape([b * g, h]),
            (GeneBase::PerCell(e), rest) => {
                let pos = match rest {
                    None => with_graph.unsqueeze_dim::<3>(0).expand([b, g, h]),
                    Some(rest) => Tensor::cat(
                        vec![
                            with_graph.unsqueeze_dim::<3>(0),
                            rest.unsqueeze_dim::<3>(0).expand([b - 1, g, h]),
                        ],
                        0,
                    ),
                };
                e + pos.reshape([b * g, h])
            }
        };
        let base = self.emb_trans_v2.forward(base).reshape([b, g, h]);
        // 3. perturbations: per cell the sum of its genes' propagated embeddings.
        let sums = match table {
            Some(t) => self.sums_from_table(perts, t.clone()),
            None => self.perturbation_sums(perts, graphs),
        };
        let base = match sums {
            None => base,
            Some((cells, sums)) => {
                let k = cells.len();
                // GEARS stacks a lone perturbed cell twice (batch norm needs two rows).
                let fused = if k == 1 {
                    self.pert_fuse
                        .forward(Tensor::cat(vec![sums.clone(), sums], 0))
                        .slice([0..1, 0..h])
                } else {
                    self.pert_fuse.forward(sums)
                };
                let idx: Vec<i64> = cells.iter().map(|&c| c as i64).collect();
                let add = Tensor::<B, 2>::zeros([b, h], &device).select_assign(
                    0,
                    Tensor::from_data(TensorData::new(idx, [k]), &device),
                    fused,
                    burn::tensor::IndexingUpdateOp::Add,
                );
                base + add.unsqueeze_dim::<3>(1)
            }
        };
        // 4. decoders.
        let base = relu(batch_norm_rows(
            &self.bn_pert_base,
            base.reshape([b * g, h]),
        ));
        let out = self.recovery_w.forward(base).reshape([b, g, h]);
        let w1 = self.indv_w1.val().unsqueeze_dim::<3>(0);
        let out = (out * w1).sum_dim(2).reshape([b, g]) + self.indv_b1.val().unsqueeze_dim(0);
        let cross = self.cross_gene_state.forward(out.clone()); // [B, H]
        // GEARS concatenates [out, cross] per gene, `[B, G, H + 1]`, and sums its product with
        // `indv_w2 [G, H + 1]` over the last axis: the same sum written as the gene's own term
        // plus a matmul of the cross-gene state with the other H columns.
        let w2 = self.indv_w2.val();
        let w2_own = w2.clone().slice([0..g, 0..1]).reshape([1, g]);
        let w2_cross = w2.slice([0..g, 1..h + 1]); // [G, H]
        let delta =
            out * w2_own + cross.matmul(w2_cross.transpose()) + self.indv_b2.val().unsqueeze_dim(0);
        // 5. control + change.
        Ok(x + delta)
    }
}
