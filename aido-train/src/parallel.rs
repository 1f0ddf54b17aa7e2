//! Data-parallel updates through burn's collective all-reduce (`burn::collective`, feature
//! `collective`), the paper's scale-out scheme: every replica holds the whole model.
//!
//! [`Replicas`] keeps one thread per device, each holding its replica (model and AdamW state)
//! from update to update, registered with the collective once: the weights go to the devices
//! when the replicas are made, never again. One update with `n` peers: the micro-batches are
//! dealt round-robin (peer `p` takes `p, p + n, …`); each peer runs forward + backward on its
//! share (loss normalized by the masked positions of the *whole* update), flattens its
//! accumulated gradients in the model's parameter order (its module tree, not burn's random
//! `ParamId`s) into one buffer with a presence flag per parameter and its partial loss; the
//! buffers are summed by **one** all-reduce per update; every peer unflattens the same sums,
//! clips and applies AdamW, so the replicas stay identical and the update equals the
//! single-device one with gradient accumulation (up to the order of float additions).
//! Validation and checkpoints read peer 0's replica ([`Replicas::snapshot`]).
//!
//! One set of replicas runs at a time per process (the collective server is global per
//! backend). The flattening here is also what [`crate::multinode`] sends between nodes.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use aido_model::AidoCell;
use aido_model::burn::collective::{
    self, AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation,
};
use aido_model::burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use aido_model::burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use aido_model::burn::tensor::backend::{AutodiffBackend, Backend};
use aido_model::burn::tensor::{Tensor, TensorData, TensorPrimitive};
use aido_rda::RdaBatch;

use crate::optim::clip_global_norm;
use crate::pretrain::micro_step;
use crate::{Result, TrainError};

/// What one data-parallel update measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateStats {
    /// Masked MSE of the whole update (all peers).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Forces lazily initialized parameters to take their values, so that clones share them.
pub fn materialize<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) {
    struct Touch;
    impl<B: AutodiffBackend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit::<Touch>(&mut Touch);
}

/// Every float parameter of `module`, flattened in module order.
pub(crate) fn flatten_params<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> Vec<f32> {
    struct Flat<'a>(&'a mut Vec<f32>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flat<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let v = param.val().inner().into_data().convert::<f32>();
            self.0.extend(v.iter::<f32>());
        }
    }
    let mut out = Vec::new();
    module.visit(&mut Flat(&mut out));
    out
}

/// The gradient of every float parameter of `module`, in module order: a presence flag (1 when
/// `grads` holds one), then its values (zeros when absent).
pub(crate) fn flatten_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<f32> {
    struct Flat<'a> {
        grads: &'a GradientsParams,
        out: &'a mut Vec<f32>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flat<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(g) => {
                    self.out.push(1.0);
                    self.out
                        .extend(g.into_data().convert::<f32>().iter::<f32>());
                }
                None => {
                    let n = param.val().shape().num_elements();
                    self.out.push(0.0);
                    self.out.extend(std::iter::repeat_n(0.0, n));
                }
            }
        }
    }
    let mut out = Vec::new();
    module.visit(&mut Flat {
        grads,
        out: &mut out,
    });
    out
}

/// The inverse of [`flatten_grads`] over a (reduced) buffer: a gradient on `device` for every
/// parameter whose flag is positive (some peer had one).
pub(crate) fn unflatten_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    buf: &[f32],
    device: &B::Device,
) -> GradientsParams {
    struct Unflat<'a, B: AutodiffBackend> {
        buf: &'a [f32],
        at: usize,
        grads: GradientsParams,
        device: &'a B::Device,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unflat<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.val().shape();
            let end = self.at + 1 + shape.num_elements();
            if let (Some(&flag), Some(vals)) =
                (self.buf.get(self.at), self.buf.get(self.at + 1..end))
                && flag > 0.0
            {
                let t = Tensor::<B::InnerBackend, D>::from_data(
                    TensorData::new(vals.to_vec(), shape),
                    self.device,
                );
                self.grads.register::<B::InnerBackend, D>(param.id, t);
            }
            self.at = end;
        }
    }
    let mut v = Unflat::<B> {
        buf,
        at: 0,
        grads: GradientsParams::new(),
        device,
    };
    module.visit(&mut v);
    v.grads
}

/// The element-wise sum of `v` over the registered peers (burn's collective, on `device`).
pub(crate) fn all_reduce_sum<B: Backend>(
    id: PeerId,
    v: Vec<f32>,
    device: &B::Device,
) -> std::result::Result<Vec<f32>, CollectiveError> {
    let n = v.len();
    let t = Tensor::<B, 1>::from_data(TensorData::new(v, [n]), device)
        .into_primitive()
        .tensor();
    let r = collective::all_reduce::<B>(id, t, ReduceOperation::Sum)?;
    let out = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(r))
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| CollectiveError::Other(format!("{e:?}")))?;
    if out.len() != n {
        return Err(CollectiveError::Other(format!(
            "{} values came back for {n}",
            out.len()
        )));
    }
    Ok(out)
}

fn coll(peer: usize, e: CollectiveError) -> TrainError {
    TrainError::Config(format!(
        "data-parallel peer {peer}: collective operation failed: {e:?}"
    ))
}

enum Cmd {
    Update {
        micro: Arc<Vec<RdaBatch>>,
        lr: f64,
        clip_norm: f64,
    },
    Snapshot,
}

enum Reply<B: AutodiffBackend, O> {
    Ready,
    Stats(UpdateStats),
    Replica(Box<AidoCell<B>>, O),
}

/// Persistent data-parallel replicas, one thread and device each: see the module docs.
pub struct Replicas<B: AutodiffBackend, O> {
    tx: Vec<mpsc::Sender<Cmd>>,
    rx: Vec<mpsc::Receiver<Result<Reply<B, O>>>>,
    handles: Vec<JoinHandle<()>>,
}

/// One peer's share of an update: forward + backward on its micro-batches, one all-reduce of
/// the flattened gradients and partial loss, then (when finite) clip and step.
#[allow(clippy::too_many_arguments)]
fn peer_update<B, O>(
    p: usize,
    n: usize,
    model: AidoCell<B>,
    mut optim: O,
    micro: &[RdaBatch],
    lr: f64,
    clip_norm: f64,
    device: &B::Device,
) -> (AidoCell<B>, O, Result<UpdateStats>)
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B>,
{
    let id = PeerId::from(p);
    let total_masked: usize = micro.iter().map(|b| b.n_masked).sum();
    let mut accum = GradientsAccumulator::<AidoCell<B>>::new();
    let (mut part, mut failed) = (0.0f64, None);
    for b in micro.iter().skip(p).step_by(n) {
        match micro_step(&model, b, total_masked, device) {
            Ok((lv, grads)) => {
                part += lv;
                accum.accumulate::<B>(&model, grads);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let mut buf = flatten_grads::<B, _>(&model, &accum.grads());
    buf.push(part as f32);
    if failed.is_some() {
        // Still take part in the all-reduce (the other peers wait in it): NaN marks the update.
        buf.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let red = match all_reduce_sum::<B::InnerBackend>(id, buf, device) {
        Ok(r) => r,
        Err(e) => return (model, optim, Err(coll(p, e))),
    };
    if let Some(e) = failed {
        return (model, optim, Err(e));
    }
    let (body, loss) = red.split_at(red.len() - 1);
    let loss = f64::from(loss[0]);
    if !loss.is_finite() {
        return (
            model,
            optim,
            Ok(UpdateStats {
                loss,
                grad_norm: f64::NAN,
            }),
        );
    }
    let mut grads = unflatten_grads::<B, _>(&model, body, device);
    let grad_norm = clip_global_norm::<B, _>(&model, &mut grads, clip_norm);
    if !grad_norm.is_finite() {
        return (model, optim, Ok(UpdateStats { loss, grad_norm }));
    }
    let model = optim.step(lr, model, grads);
    (model, optim, Ok(UpdateStats { loss, grad_norm }))
}

impl<B, O> Replicas<B, O>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    /// One replica of `model` and `optim` per device, each on its own thread, registered with
    /// the collective (returns when all have).
    pub fn new(model: &AidoCell<B>, optim: &O, devices: &[B::Device]) -> Result<Self> {
        let n = devices.len();
        if n == 0 {
            return Err(TrainError::Config("data parallelism needs a device".into()));
        }
        if model.cls.is_none() {
            return Err(TrainError::Config(
                "the model has no masked-value head".into(),
            ));
        }
        materialize::<B, _>(model);
        collective::reset_collective::<B::InnerBackend>();
        let config = CollectiveConfig::default()
            .with_num_devices(n)
            .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
        let (mut txs, mut rxs, mut handles) = (Vec::new(), Vec::new(), Vec::new());
        for (p, device) in devices.iter().enumerate() {
            let (tx, cmd_rx) = mpsc::channel::<Cmd>();
            let (reply_tx, rx) = mpsc::channel::<Result<Reply<B, O>>>();
            let (model, optim, config, device) =
                (model.clone(), optim.clone(), config.clone(), device.clone());
            handles.push(std::thread::spawn(move || {
                let id = PeerId::from(p);
                let mut model = model.fork(&device);
                let mut optim = optim;
                if let Err(e) = collective::register::<B::InnerBackend>(id, device.clone(), config)
                {
                    let _ = reply_tx.send(Err(coll(p, e)));
                    return;
                }
                let _ = reply_tx.send(Ok(Reply::Ready));
                for cmd in cmd_rx {
                    let reply = match cmd {
                        Cmd::Update {
                            micro,
                            lr,
                            clip_norm,
                        } => {
                            let (m, o, r) =
                                peer_update(p, n, model, optim, &micro, lr, clip_norm, &device);
                            (model, optim) = (m, o);
                            r.map(Reply::Stats)
                        }
                        Cmd::Snapshot => Ok(Reply::Replica(Box::new(model.clone()), optim.clone())),
                    };
                    if reply_tx.send(reply).is_err() {
                        break;
                    }
                }
                let _ = collective::finish_collective::<B::InnerBackend>(id);
            }));
            txs.push(tx);
            rxs.push(rx);
        }
        let r = Replicas {
            tx: txs,
            rx: rxs,
            handles,
        };
        for p in 0..n {
            match r.recv(p)? {
                Reply::Ready => {}
                _ => return Err(TrainError::Config(format!("peer {p}: unexpected reply"))),
            }
        }
        Ok(r)
    }

    /// Peers.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether there are no peers (never true for made replicas).
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    fn recv(&self, p: usize) -> Result<Reply<B, O>> {
        self.rx[p].recv().unwrap_or_else(|_| {
            Err(TrainError::Config(format!(
                "data-parallel peer {p} stopped (panicked)"
            )))
        })
    }

    fn send(&self, p: usize, cmd: Cmd) -> Result<()> {
        self.tx[p]
            .send(cmd)
            .map_err(|_| TrainError::Config(format!("data-parallel peer {p} stopped (panicked)")))
    }

    /// One update over `micro` (at least one micro-batch per peer): every peer's statistics,
    /// in peer order (they agree). A non-finite loss or gradient norm is returned without
    /// stepping.
    pub fn update_all(
        &mut self,
        micro: Vec<RdaBatch>,
        lr: f64,
        clip_norm: f64,
    ) -> Result<Vec<UpdateStats>> {
        let n = self.len();
        if micro.len() < n {
            return Err(TrainError::Config(format!(
                "data parallelism over {n} devices needs at least {n} micro-batches per update, got {}",
                micro.len()
            )));
        }
        let micro = Arc::new(micro);
        for p in 0..n {
            self.send(
                p,
                Cmd::Update {
                    micro: micro.clone(),
                    lr,
                    clip_norm,
                },
            )?;
        }
        // Every peer answers (an error of one is reported after all have).
        let replies: Vec<Result<Reply<B, O>>> = (0..n).map(|p| self.recv(p)).collect();
        replies
            .into_iter()
            .map(|r| match r? {
                Reply::Stats(s) => Ok(s),
                _ => Err(TrainError::Config("unexpected peer reply".into())),
            })
            .collect()
    }

    /// [`Replicas::update_all`], returning peer 0's statistics.
    pub fn update(&mut self, micro: Vec<RdaBatch>, lr: f64, clip_norm: f64) -> Result<UpdateStats> {
        Ok(self.update_all(micro, lr, clip_norm)?[0])
    }

    /// Every peer's model and optimizer (in peer order).
    pub fn snapshot_all(&self) -> Result<Vec<(AidoCell<B>, O)>> {
        (0..self.len())
            .map(|p| {
                self.send(p, Cmd::Snapshot)?;
                match self.recv(p)? {
                    Reply::Replica(m, o) => Ok((*m, o)),
                    _ => Err(TrainError::Config("unexpected peer reply".into())),
                }
            })
            .collect()
    }

    /// Peer 0's model and optimizer (what validation and checkpoints use).
    pub fn snapshot(&self) -> Result<(AidoCell<B>, O)> {
        self.send(0, Cmd::Snapshot)?;
        match self.recv(0)? {
            Reply::Replica(m, o) => Ok((*m, o)),
            _ => Err(TrainError::Config("unexpected peer reply".into())),
        }
    }
}

impl<B: AutodiffBackend, O> Drop for Replicas<B, O> {
    fn drop(&mut self) {
        // Closing the command channels ends every peer's loop; each then leaves the collective.
        self.tx.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// One update of `model` over `micro` (at least one micro-batch per device) on `devices`,
/// through fresh [`Replicas`]: peer 0's updated model and optimizer.
pub fn data_parallel_update<B, O>(
    model: AidoCell<B>,
    optim: O,
    micro: &[RdaBatch],
    lr: f64,
    clip_norm: f64,
    devices: &[B::Device],
) -> Result<(AidoCell<B>, O, UpdateStats)>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    data_parallel_update_all(model, optim, micro, lr, clip_norm, devices)?
        .into_iter()
        .next()
        .ok_or_else(|| TrainError::Config("no data-parallel peer ran".into()))
}

/// Like [`data_parallel_update`], returning every peer's model, optimizer and statistics (in
/// peer order), e.g. to check that the replicas agree.
pub fn data_parallel_update_all<B, O>(
    model: AidoCell<B>,
    optim: O,
    micro: &[RdaBatch],
    lr: f64,
    clip_norm: f64,
    devices: &[B::Device],
) -> Result<Vec<(AidoCell<B>, O, UpdateStats)>>
where
    B: AutodiffBackend,
    O: Optimizer<AidoCell<B>, B> + 'static,
{
    let n = devices.len();
    if n == 0 || micro.len() < n {
        return Err(TrainError::Config(format!(
            "data parallelism over {n} devices needs at least {n} micro-batches per update, got {}",
            micro.len()
        )));
    }
    let mut r = Replicas::new(&model, &optim, devices)?;
    let stats = r.update_all(micro.to_vec(), lr, clip_norm)?;
    let reps = r.snapshot_all()?;
    Ok(reps
        .into_iter()
        .zip(stats)
        .map(|((m, o), s)| (m, o, s))
        .collect())
}
