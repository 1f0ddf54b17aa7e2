//! Multi-node data parallelism (**experimental**), on burn 0.21's global collective: one
//! process per node, one device per process, an orchestrator process (`aido orchestrator`)
//! that the nodes register with, and gradients summed across nodes by burn's global ring
//! all-reduce over WebSocket (host-staged: no NCCL).
//!
//! One update over `n` nodes: every node builds the same `grad_accum` micro-batches from the
//! same data stream (so each knows the masked positions of the whole update, which normalize
//! the loss), runs forward + backward on micro-batches `rank, rank + n, …`, and flattens its
//! accumulated gradients, in the model's parameter order (its module tree, not burn's random
//! `ParamId`s), into **one buffer** with a presence flag per parameter and its partial loss;
//! that buffer is all-reduced (sum) once; every node unflattens the same sums, clips and steps
//! AdamW, so the replicas stay identical and the update is the single-process update with
//! gradient accumulation, up to float summation order.
//!
//! burn 0.21's node-level barrier (the end of every global all-reduce) keeps the peers it has
//! seen after its first use, so a second all-reduce within one registration never returns:
//! each exchange here registers with the orchestrator, all-reduces once and leaves (a few
//! round trips per update on top of the transfer). After a failed exchange the orchestrator
//! keeps the dead registration: restart it before resuming.
//!
//! Nodes must start identical: before the first update the nodes all-reduce their flattened
//! weights and update count and each checks the sum against its own (a node initialized with
//! other weights, or resumed from another checkpoint, stops the run naming its rank). Every
//! collective call has a deadline (`NodeConfig::timeout`): a node that dies or hangs stops the
//! others with a [`TrainError::Node`] naming the last good checkpoint, from which `--resume` on
//! every node continues.
//!
//! What is tested: two node processes and an orchestrator on 127.0.0.1 (CPU backend) log the
//! losses of one process with `--grad-accum 2`; a mismatched start is refused; a killed node
//! stops its peer. Not tested: real networks, more than two nodes, GPUs, more than one device
//! per node (refused).

use std::sync::mpsc;
use std::time::Duration;

use aido_model::AidoCell;
use aido_model::burn::collective::{self, CollectiveConfig, PeerId};
use aido_model::burn::optim::{GradientsAccumulator, Optimizer};
use aido_model::burn::tensor::backend::AutodiffBackend;
use aido_rda::RdaBatch;

use crate::config::NodeConfig;
use crate::optim::clip_global_norm;
use crate::parallel::{
    all_reduce_sum, flatten_grads, flatten_params, materialize, unflatten_grads,
};
use crate::pretrain::micro_step;
use crate::{Result, TrainError};

fn node_err(detail: impl Into<String>) -> TrainError {
    TrainError::Node {
        detail: detail.into(),
        last_checkpoint: None,
    }
}

/// This process' place in a multi-node run.
pub struct Node<B: AutodiffBackend> {
    cfg: NodeConfig,
    id: PeerId,
    device: B::Device,
}

/// Runs `f` on a helper thread and waits at most `timeout` for it.
fn with_deadline<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> std::result::Result<T, collective::CollectiveError> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(node_err(format!("{what} failed: {e:?}"))),
        Err(_) => Err(node_err(format!(
            "{what}: no answer from the other nodes within {} s (a node stopped or cannot be reached)",
            timeout.as_secs()
        ))),
    }
}

impl<B> Node<B>
where
    B: AutodiffBackend,
{
    /// This node's place in the run (checked; nothing is contacted until the first exchange).
    pub fn join(cfg: &NodeConfig, device: &B::Device) -> Result<Self> {
        cfg.validate()?;
        Ok(Node {
            cfg: cfg.clone(),
            id: PeerId::from(cfg.rank as usize),
            device: device.clone(),
        })
    }

    fn collective_config(&self) -> Result<CollectiveConfig> {
        let orch = format!("ws://{}", self.cfg.orchestrator);
        let node = format!("ws://{}", self.cfg.bind);
        Ok(CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(self.cfg.nodes)
            .with_global_address(orch.parse().map_err(|e: String| node_err(e))?)
            .with_node_address(node.parse().map_err(|e: String| node_err(e))?)
            .with_data_service_port(self.cfg.bind_port()?))
    }

    /// The sum of `v` over all nodes: one registration with the orchestrator, one global
    /// all-reduce, and leaving again. (burn 0.21's node-level barrier keeps the peers it has
    /// seen after its first use, so a second all-reduce in one registration never returns: a
    /// fresh registration per exchange is the way to use it more than once.)
    fn all_reduce_sum(&self, v: Vec<f32>, what: &str) -> Result<Vec<f32>> {
        let (id, device, config) = (self.id, self.device.clone(), self.collective_config()?);
        with_deadline(self.cfg.timeout, what, move || {
            collective::reset_collective::<B::InnerBackend>();
            collective::register::<B::InnerBackend>(id, device.clone(), config)?;
            let r = all_reduce_sum::<B::InnerBackend>(id, v, &device)?;
            collective::finish_collective::<B::InnerBackend>(id)?;
            Ok(r)
        })
    }

    /// Checks that every node holds the same weights and update count (see the module docs).
    pub fn check_identical(&self, model: &AidoCell<B>, step: u64) -> Result<()> {
        materialize::<B, _>(model);
        let mut flat = flatten_params::<B, _>(model);
        flat.push(step as f32);
        let sum = self.all_reduce_sum(flat.clone(), "comparing the nodes' starting weights")?;
        let k = self.cfg.nodes as f32;
        let bad = flat
            .iter()
            .zip(&sum)
            .position(|(&x, &s)| (s - k * x).abs() > 1e-5 * (k * x).abs().max(1e-6));
        if let Some(i) = bad {
            let what = if i + 1 == flat.len() {
                format!(
                    "update count {step} differs from the other nodes' (sum {})",
                    sum[i]
                )
            } else {
                format!("weight {i} differs from the other nodes'")
            };
            return Err(node_err(format!(
                "node {}: {what}: every node must start from the same weights (all fresh with the same seed and build, or all `resume` from the same checkpoint)",
                self.cfg.rank
            )));
        }
        Ok(())
    }

    /// One update (see the module docs): this node's share of `micro`, one all-reduce, clip,
    /// AdamW. Returns the model, optimizer, the update's loss and gradient norm (non-finite ones
    /// are returned without stepping, on every node alike).
    pub fn update<O>(
        &self,
        model: AidoCell<B>,
        mut optim: O,
        micro: &[RdaBatch],
        lr: f64,
        clip_norm: f64,
    ) -> Result<(AidoCell<B>, O, f64, f64)>
    where
        O: Optimizer<AidoCell<B>, B>,
    {
        let (n, r) = (self.cfg.nodes as usize, self.cfg.rank as usize);
        if micro.len() < n {
            return Err(TrainError::Config(format!(
                "{n} nodes need at least {n} micro-batches per update (grad_accum), got {}",
                micro.len()
            )));
        }
        let total_masked: usize = micro.iter().map(|b| b.n_masked).sum();
        let mut accum = GradientsAccumulator::<AidoCell<B>>::new();
        let mut part = 0.0f64;
        for b in micro.iter().skip(r).step_by(n) {
            let (lv, grads) = micro_step(&model, b, total_masked, &self.device)?;
            part += lv;
            accum.accumulate::<B>(&model, grads);
        }
        let mut buf = flatten_grads::<B, _>(&model, &accum.grads());
        buf.push(part as f32);
        let red = self.all_reduce_sum(buf, "the gradient all-reduce")?;
        let (body, loss) = red.split_at(red.len() - 1);
        let loss = f64::from(loss[0]);
        let mut grads = unflatten_grads::<B, _>(&model, body, &self.device);
        if !loss.is_finite() {
            return Ok((model, optim, loss, f64::NAN));
        }
        let grad_norm = clip_global_norm::<B, _>(&model, &mut grads, clip_norm);
        if !grad_norm.is_finite() {
            return Ok((model, optim, loss, grad_norm));
        }
        let model = optim.step(lr, model, grads);
        Ok((model, optim, loss, grad_norm))
    }
}
