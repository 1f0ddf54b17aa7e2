//! The backends this crate is built for, and choosing one at run time.
//!
//! CPU (burn-flex) is always there. CUDA and wgpu are behind the cargo features `cuda` and
//! `wgpu`, so a plain build needs nothing GPU-related.

use crate::{ModelError, Result};

/// The CPU backend (burn-flex, f32).
pub type Cpu = burn::backend::Flex;

/// The CUDA backend (feature `cuda`; kernels are compiled by NVRTC at run time).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// The wgpu backend (feature `wgpu`; Vulkan, Metal, DX12, or Mesa's software Vulkan).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// burn-flex on the CPU.
    #[default]
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// The default wgpu adapter.
    Wgpu,
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "wgpu" => Ok(DeviceKind::Wgpu),
            o => Err(format!("unknown device '{o}' (cpu, cuda, wgpu)")),
        }
    }
}

impl DeviceKind {
    /// Whether this build contains the backend.
    pub fn compiled(self) -> bool {
        match self {
            DeviceKind::Cpu => true,
            DeviceKind::Cuda => cfg!(feature = "cuda"),
            DeviceKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// Errors, saying how to rebuild, when this build lacks the backend.
    pub fn ensure_compiled(self) -> Result<()> {
        if self.compiled() {
            return Ok(());
        }
        let feature = match self {
            DeviceKind::Cuda => "cuda",
            _ => "wgpu",
        };
        Err(ModelError::Device(format!(
            "this build has no {feature} backend: rebuild with `cargo build --release --features {feature}` (CPU is always available: `device` cpu)"
        )))
    }
}
