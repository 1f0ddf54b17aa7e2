//! What burn's optimizer lacks for these runs: clipping by the *global* gradient norm (burn's
//! `GradientClipping::Norm` clips each tensor by its own norm) and AdamW with the paper's
//! constants, optionally with parameter groups that have their own learning-rate multipliers.

use std::collections::HashSet;

use aido_model::burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use aido_model::burn::optim::adaptor::OptimizerAdaptor;
use aido_model::burn::optim::{
    AdamW, AdamWConfig, GradientsParams, MultiGradientsParams, Optimizer,
};
use aido_model::burn::tensor::backend::AutodiffBackend;
use aido_model::burn::tensor::{ElementConversion, Tensor};

use crate::config::OptimConfig;

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = (g.clone() * g).sum();
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// `‖g‖₂` over every gradient of `module` held in `grads` (all tensors together).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> { grads, acc: None };
    module.visit(&mut v);
    v.acc
        .map(|t| f64::from(t.into_scalar().elem::<f32>()).sqrt())
        .unwrap_or(0.0)
}

/// Multiplies every gradient by `factor`.
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    let mut v = Scale::<B> {
        grads,
        factor,
        _b: std::marker::PhantomData,
    };
    module.visit(&mut v);
}

/// Clips by the global norm: when `‖g‖ > max_norm > 0`, every gradient is scaled by
/// `max_norm / ‖g‖` (PyTorch's `clip_grad_norm_` rule). Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm::<B, M>(module, grads);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        scale_grads::<B, M>(module, grads, max_norm / (norm + 1e-6));
    }
    norm
}

/// AdamW with the configured β, ε and weight decay.
pub fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    o: &OptimConfig,
) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_beta_1(o.beta1)
        .with_beta_2(o.beta2)
        .with_epsilon(o.eps)
        .with_weight_decay(o.weight_decay)
        .init::<B, M>()
}

/// The parameter ids of a module (or of a part of one).
pub fn param_ids<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> HashSet<ParamId> {
    struct Ids(HashSet<ParamId>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.insert(param.id);
        }
    }
    let mut v = Ids(HashSet::new());
    module.visit::<Ids>(&mut v);
    v.0
}

/// One AdamW per parameter group, each with its own learning-rate multiplier (e.g. a 10× rate
/// for a new head over a pretrained backbone). Parameters in no group are not updated. It is a
/// burn [`Optimizer`]: its record is every group's AdamW state, keyed by parameter id, so
/// checkpoints save and restore it like a single AdamW.
pub struct GroupedAdamW<B: AutodiffBackend, M: AutodiffModule<B>> {
    groups: Vec<Group<B, M>>,
}

struct Group<B: AutodiffBackend, M: AutodiffModule<B>> {
    name: String,
    ids: HashSet<ParamId>,
    lr_scale: f64,
    optim: OptimizerAdaptor<AdamW, M, B>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Clone for Group<B, M> {
    fn clone(&self) -> Self {
        Group {
            name: self.name.clone(),
            ids: self.ids.clone(),
            lr_scale: self.lr_scale,
            optim: self.optim.clone(),
        }
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Clone for GroupedAdamW<B, M> {
    fn clone(&self) -> Self {
        GroupedAdamW {
            groups: self.groups.clone(),
        }
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupedAdamW<B, M> {
    /// No groups yet.
    pub fn new() -> Self {
        GroupedAdamW { groups: Vec::new() }
    }

    /// Adds a group of parameters updated at `lr × lr_scale`. A parameter already in an
    /// earlier group stays there.
    pub fn group(
        mut self,
        name: &str,
        ids: HashSet<ParamId>,
        lr_scale: f64,
        o: &OptimConfig,
    ) -> Self {
        let taken: HashSet<ParamId> = self
            .groups
            .iter()
            .flat_map(|g| g.ids.iter().copied())
            .collect();
        let ids = ids.into_iter().filter(|i| !taken.contains(i)).collect();
        self.groups.push(Group {
            name: name.to_string(),
            ids,
            lr_scale,
            optim: adamw::<B, M>(o),
        });
        self
    }

    /// Group names with their sizes (parameter tensors) and multipliers.
    pub fn describe(&self) -> Vec<(String, usize, f64)> {
        self.groups
            .iter()
            .map(|g| (g.name.clone(), g.ids.len(), g.lr_scale))
            .collect()
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Default for GroupedAdamW<B, M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Optimizer<M, B> for GroupedAdamW<B, M> {
    type Record = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

    /// Each group steps with its share of `grads` at `lr × lr_scale`; gradients of parameters
    /// in no group are dropped.
    fn step(&mut self, lr: f64, mut module: M, mut grads: GradientsParams) -> M {
        for g in &mut self.groups {
            let mut part = GradientsParams::new();
            let mut mover = Move::<B> {
                from: &mut grads,
                to: &mut part,
                ids: &g.ids,
                _b: std::marker::PhantomData,
            };
            module.visit(&mut mover);
            if !part.is_empty() {
                module = g.optim.step(lr * g.lr_scale, module, part);
            }
        }
        module
    }

    fn step_multi(&mut self, lr: f64, module: M, mut grads: MultiGradientsParams) -> M {
        let mut single = GradientsParams::new();
        let mut v = Gather::<B> {
            from: &mut grads,
            to: &mut single,
            _b: std::marker::PhantomData,
        };
        module.visit(&mut v);
        self.step(lr, module, single)
    }

    fn to_record(&self) -> Self::Record {
        let mut all = Self::Record::default();
        for g in &self.groups {
            all.extend(g.optim.to_record());
        }
        all
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        for g in &mut self.groups {
            let mine = record
                .iter()
                .filter(|(id, _)| g.ids.contains(id))
                .map(|(id, r)| (*id, r.clone()))
                .collect();
            g.optim = g.optim.clone().load_record(mine);
        }
        self
    }
}

struct Move<'a, B: AutodiffBackend> {
    from: &'a mut GradientsParams,
    to: &'a mut GradientsParams,
    ids: &'a HashSet<ParamId>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Move<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id)
            && let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to.register(param.id, g);
        }
    }
}

struct Gather<'a, B: AutodiffBackend> {
    from: &'a mut MultiGradientsParams,
    to: &'a mut GradientsParams,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some((g, _)) = self.from.remove::<B::InnerBackend, D>(param.id) {
            self.to.register(param.id, g);
        }
    }
}
