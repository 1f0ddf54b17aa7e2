//! Data-parallel updates through burn's collective all-reduce (`burn::collective`, feature
//! `collective`), the paper's scale-out scheme: every replica holds the whole model.
//!
//! One update with `n` peers: the micro-batches of the update are dealt round-robin to the
//! peers; each peer runs forward + backward on its share in its own thread and device (loss
//! normalized by the masked positions of the *whole* update), the gradients are summed across
//! peers with `GradientsParams::all_reduce` (burn's collective, parameters in a fixed order), and
//! every peer clips and applies AdamW to identical gradients, so the replicas stay identical and
//! the update equals the single-device one with gradient accumulation (up to the order of float
//! additions).
//!
//! Replicas are made from the model at every update and peer 0's result is kept: simple and
//! exact, at the cost of re-distributing the weights each update (a persistent-replica loop
//! would avoid that on GPUs). One data-parallel update runs at a time per process (the
//! collective server is global per backend).

use aido_model::AidoCell;
use aido_model::attention::AttentionBackend;
use aido_model::burn::collective::{
    self, AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation,
};
use aido_model::burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use aido_model::burn::optim::{GradientsAccumulator, Optimizer};
use aido_model::burn::tensor::backend::AutodiffBackend;
use aido_model::burn::tensor::{ElementConversion, Tensor, TensorData};
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

fn coll(peer: usize, e: collective::CollectiveError) -> TrainError {
    TrainError::Config(format!(
        "data-parallel peer {peer}: collective operation failed: {e:?}"
    ))
}

/// One update of `model` over `micro` (at least one micro-batch per device) on `devices`:
/// see the module docs. Returns peer 0's updated model and optimizer.
pub fn data_parallel_update<B, O>(
    model: AidoCell<B>,
    optim: O,
    micro: &[RdaBatch],
    lr: f64,
    clip_norm: f64,
    devices: &[B::Device],
) -> Result<(AidoCell<B>, O, UpdateStats)>
where
    B: AutodiffBackend + AttentionBackend,
    O: Optimizer<AidoCell<B>, B>,
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
    B: AutodiffBackend + AttentionBackend,
    O: Optimizer<AidoCell<B>, B>,
{
    let n = devices.len();
    if n == 0 || micro.len() < n {
        return Err(TrainError::Config(format!(
            "data parallelism over {n} devices needs at least {n} micro-batches per update, got {}",
            micro.len()
        )));
    }
    if model.cls.is_none() {
        // Checked before any peer registers: a peer failing alone would leave the others
        // waiting in the all-reduce.
        return Err(TrainError::Config(
            "the model has no masked-value head".into(),
        ));
    }
    let total_masked: usize = micro.iter().map(|b| b.n_masked).sum();
    materialize::<B, _>(&model);
    collective::reset_collective::<B::InnerBackend>();
    let config = CollectiveConfig::default()
        .with_num_devices(n)
        .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
    let results: Vec<Result<(AidoCell<B>, O, UpdateStats)>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(p, device)| {
                let (model, mut optim, config) = (model.clone(), optim.clone(), config.clone());
                s.spawn(move || -> Result<(AidoCell<B>, O, UpdateStats)> {
                    let id = PeerId::from(p);
                    let model = model.fork(device);
                    collective::register::<B::InnerBackend>(id, device.clone(), config)
                        .map_err(|e| coll(p, e))?;
                    let mut accum = GradientsAccumulator::<AidoCell<B>>::new();
                    let mut part = 0.0f64;
                    for b in micro.iter().skip(p).step_by(n) {
                        let (lv, grads) = micro_step(&model, b, total_masked, device)?;
                        part += lv;
                        accum.accumulate::<B>(&model, grads);
                    }
                    let grads = accum
                        .grads()
                        .all_reduce::<B::InnerBackend>(id, ReduceOperation::Sum)
                        .map_err(|e| coll(p, e))?;
                    // The update's loss: the peers' partial sums, reduced the same way.
                    let l = Tensor::<B::InnerBackend, 1>::from_data(
                        TensorData::new(vec![part as f32], [1]),
                        device,
                    );
                    let l = collective::all_reduce::<B::InnerBackend>(
                        id,
                        l.into_primitive().tensor(),
                        ReduceOperation::Sum,
                    )
                    .map_err(|e| coll(p, e))?;
                    let loss = Tensor::<B::InnerBackend, 1>::from_primitive(
                        aido_model::burn::tensor::TensorPrimitive::Float(l),
                    )
                    .into_scalar()
                    .elem::<f64>();
                    collective::finish_collective::<B::InnerBackend>(id).map_err(|e| coll(p, e))?;
                    let mut grads = grads;
                    let grad_norm = clip_global_norm::<B, _>(&model, &mut grads, clip_norm);
                    let model = optim.step(lr, model, grads);
                    Ok((model, optim, UpdateStats { loss, grad_norm }))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(p, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(TrainError::Config(format!(
                        "data-parallel peer {p} panicked"
                    )))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}
