//! Compiles `kernels/*.cu` to PTX with nvcc, only when the `cuda` feature is on, so
//! CPU builds (CI included) need no CUDA toolkit. The PTX is embedded by
//! `src/gpu/cuda.rs` and JIT-compiled by the driver on first load.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels/rebuild.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Same variable candle-kernels reads; 90 = H100/H200.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let ptx = out.join("rebuild.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("kernels/rebuild.cu")
        .arg("-o")
        .arg(&ptx)
        .status()
        .unwrap_or_else(|e| panic!("feature `cuda`: cannot run {}: {e}", nvcc.display()));
    assert!(
        status.success(),
        "feature `cuda`: nvcc failed on kernels/rebuild.cu ({status})"
    );
}
