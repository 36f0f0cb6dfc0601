//! Rebuilding a budget on the GPU from its compressed bytes.
//!
//! A budget is one contiguous prefix of the `.octet` file. The GPU loader copies
//! exactly that prefix to the device (about one bit per weight per BitStack block,
//! `b` bits per palette index, plus the resident tensors) and rebuilds every tensor
//! there, instead of rebuilding on the host and copying f32 weights (32 bits per
//! weight) across PCIe:
//!
//! - BitStack: one fused kernel per matrix. A thread block owns a 64 x 64 output
//!   tile; for each loaded block it stages `u` and `vt` tiles (16 ranks at a time) in
//!   shared memory as f32, each thread forms 16 dot products, flips their signs with
//!   the packed bits, and accumulates in f32 registers; the result is divided by the
//!   per-input-channel scales and written once.
//! - Palette: one thread per weight unpacks its index and gathers its group's f16
//!   centroid.
//! - Scaled and (rescaled) nested palettes: one thread per weight unpacks its base
//!   index, appends one bit per loaded refinement plane, gathers the last loaded
//!   table's f16 level, applies its block's correction (the last loaded step's) and
//!   then its block's scale and offset, with unfused multiplies and adds so the result
//!   is bit-identical to the CPU rebuild.
//! - Resident f16/f32 tensors are widened/copied on the device.
//!
//! [`jobs`] turns a manifest and budget into per-tensor jobs (absolute offsets);
//! [`emulate`] runs the kernels' exact indexing on the CPU (the scalar twins tested
//! against the reference rebuild without a GPU); the CUDA launch code is behind the
//! `cuda` feature (`load_budget_cuda`).

pub mod emulate;
pub mod jobs;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{GpuLoadTimings, GpuLoadedWeights, load_budget_cuda};

pub use jobs::{DeviceTensor, RescaleJob, TensorJob, device_jobs};

#[cfg(test)]
mod tests;
