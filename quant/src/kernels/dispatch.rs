//! Which instruction set the fast kernels use, decided once per process.
//!
//! Detection runs on first use and is cached in a [`OnceLock`], so a kernel call costs
//! one atomic load and a branch. The AVX2 kernels also use FMA and F16C (every AVX2
//! CPU Intel and AMD have shipped has both), so the three are detected together.
//! `POPCNT` is detected on its own: it predates AVX2 by years and the Hamming kernel
//! needs nothing else.

use std::sync::OnceLock;

/// The instruction-set level the fast kernels run at on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLevel {
    /// AVX2, FMA and F16C are all present (x86-64 only).
    pub avx2_fma_f16c: bool,
    /// The `POPCNT` instruction is present (x86-64 only).
    pub popcnt: bool,
    /// AVX-512 F, BW and VNNI are present (x86-64 only): byte masks and
    /// `vpdpbusd` multiply-adds.
    pub avx512_vnni: bool,
}

static LEVEL: OnceLock<CpuLevel> = OnceLock::new();

/// The detected level, computed on the first call.
pub fn cpu_level() -> CpuLevel {
    *LEVEL.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuLevel {
    CpuLevel {
        avx2_fma_f16c: std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c"),
        popcnt: std::arch::is_x86_feature_detected!("popcnt"),
        avx512_vnni: std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuLevel {
    // Other targets run the portable kernels, which the compiler vectorises for the
    // target's baseline (NEON is baseline on aarch64).
    CpuLevel {
        avx2_fma_f16c: false,
        popcnt: false,
        avx512_vnni: false,
    }
}
