//! The one backend dispatch: a [`DeviceKind`] chosen at run time to a burn backend type.

use aido_model::DeviceKind;
use burn::prelude::Backend;

use crate::error::Result;

/// Work generic over the backend, run by [`on_device`] on the backend a [`DeviceKind`] names.
pub trait OnDevice {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` with its default device.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Runs `work` on the backend `kind` names: the CPU (burn-flex), or CUDA / wgpu where this
/// build has them (an error saying how to rebuild otherwise).
pub fn on_device<W: OnDevice>(kind: DeviceKind, work: W) -> Result<W::Output> {
    kind.ensure_compiled()?;
    match kind {
        DeviceKind::Cpu => work.run::<aido_model::Cpu>(Default::default()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => work.run::<aido_model::backend::Cuda>(Default::default()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => work.run::<aido_model::backend::Wgpu>(Default::default()),
        #[allow(unreachable_patterns)]
        other => Err(aido_model::ModelError::Device(format!(
            "device {other:?} is not compiled in"
        ))
        .into()),
    }
}

/// Caps the CPU threads every computation of this process uses (the attention kernels,
/// burn-flex's matmuls, clustering): sets rayon's global pool to `threads` threads. Without
/// a call, rayon's default applies: the `RAYON_NUM_THREADS` environment variable, else one
/// thread per logical CPU. Call it once, before the first computation; `0` is refused, and so
/// is a second call or a call after the pool has started (the pool cannot be resized).
pub fn set_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(crate::PipelineError::option(
            "threads",
            "must be at least 1 (leave it out for one thread per CPU)",
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| {
            crate::PipelineError::option(
                "threads",
                format!("cannot set {threads} threads: {e} (set it once, before any computation)"),
            )
        })
}

/// How many threads this process's computations use (rayon's global pool).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
