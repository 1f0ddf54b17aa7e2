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
