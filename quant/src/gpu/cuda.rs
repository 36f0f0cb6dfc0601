//! The CUDA side of the GPU loader: one host-to-device copy of the budget's file
//! prefix, then the kernels of `kernels/rebuild.cu` (compiled to PTX by build.rs)
//! rebuild every tensor on the device, launched with cudarc through candle's
//! [`CudaDevice`] and handed back as candle tensors that own the device buffers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use candle_core::{CudaDevice, CudaStorage, Storage, Tensor};

use super::emulate::{THREADS_X, THREADS_Y, TILE_COLS, TILE_ROWS};
use super::jobs::{DeviceTensor, TensorJob, device_jobs};
use crate::checkpoint::{Budget, MetaEntry, Reader};
use crate::error::{QuantError, Result};

/// The PTX of `kernels/rebuild.cu`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rebuild.ptx"));
/// Name under which candle caches the loaded module.
const MODULE: &str = "octet_rebuild";

/// Where the time of a GPU load went, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GpuLoadTimings {
    /// Host: parse the manifest, checksum the budget's sections, plan the kernels.
    pub plan_s: f64,
    /// The host-to-device copy of the prefix and the block offset table.
    pub upload_s: f64,
    /// Every kernel, until the stream is idle.
    pub rebuild_s: f64,
}

/// What [`load_budget_cuda`] returns.
#[derive(Debug)]
pub struct GpuLoadedWeights {
    /// Every tensor, rebuilt at the budget as f32 on the device, by name.
    pub tensors: HashMap<String, Tensor>,
    /// The budget that was loaded.
    pub budget: Budget,
    /// The checkpoint's metadata.
    pub metadata: Vec<MetaEntry>,
    /// Bytes copied host to device: the prefix plus the block offset table.
    pub bytes_uploaded: u64,
    /// Time split.
    pub timings: GpuLoadTimings,
}

fn drv(e: DriverError) -> QuantError {
    QuantError::Candle(candle_core::Error::Cuda(Box::new(e)))
}

fn dim(x: usize, what: &'static str) -> Result<i32> {
    i32::try_from(x).map_err(|_| QuantError::InvalidConfig {
        field: what,
        reason: format!("{x} exceeds the kernel's 32-bit index"),
    })
}

/// Rebuilds every tensor of the checkpoint whose first bytes are `prefix` at `budget`
/// on the GPU `dev`. Only `prefix[..budget.prefix_len]` crosses to the device (the
/// compressed bytes: packed signs, f16 factors, scales, palette indices and tables,
/// refinement planes and corrections, resident tensors), plus 8 bytes per loaded
/// block or refinement step for the offset table.
pub fn load_budget_cuda(
    prefix: &[u8],
    source: &Path,
    budget: &Budget,
    dev: &CudaDevice,
) -> Result<GpuLoadedWeights> {
    let t0 = Instant::now();
    let bytes = budget.prefix_of(prefix, source)?;
    let reader = Reader::with_source(bytes, source)?;
    let jobs = device_jobs(&reader, budget)?;
    let mut offsets = Vec::new();
    let mut ranges = Vec::with_capacity(jobs.len());
    for t in &jobs {
        let start = offsets.len();
        match &t.job {
            TensorJob::BitStack { block_offsets, .. } => offsets.extend_from_slice(block_offsets),
            TensorJob::NestedPalette { plane_offsets, .. } => {
                offsets.extend_from_slice(plane_offsets)
            }
            _ => {}
        }
        ranges.push(start..offsets.len());
    }
    if offsets.is_empty() {
        offsets.push(0); // cudarc refuses empty copies; never read.
    }
    let func = |name: &str| -> Result<CudaFunction> {
        Ok(dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function())
    };
    let fns = [
        func("bitstack_rebuild")?,
        func("palette_decode")?,
        func("nested_palette_decode")?,
        func("widen_f16")?,
        func("copy_f32")?,
    ];
    let stream = dev.cuda_stream();
    let plan_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let d_base: CudaSlice<u8> = dev.clone_htod(bytes)?;
    let d_offs: CudaSlice<u64> = dev.clone_htod(&offsets)?;
    stream.synchronize().map_err(drv)?;
    let upload_s = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let mut outputs = Vec::with_capacity(jobs.len());
    for (t, range) in jobs.iter().zip(ranges) {
        // SAFETY (for `alloc`): every kernel below writes each of the `numel` outputs.
        let mut out = unsafe { dev.alloc::<f32>(t.numel()) }?;
        launch(&stream, t, &d_base, &d_offs, range, &mut out, &fns)?;
        outputs.push(out);
    }
    stream.synchronize().map_err(drv)?;
    let rebuild_s = t2.elapsed().as_secs_f64();

    let mut tensors = HashMap::with_capacity(jobs.len());
    for (t, out) in jobs.iter().zip(outputs) {
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev.clone()));
        tensors.insert(t.name.clone(), Tensor::from((storage, t.shape.clone())));
    }
    Ok(GpuLoadedWeights {
        tensors,
        budget: budget.clone(),
        metadata: reader.manifest().metadata.clone(),
        bytes_uploaded: (bytes.len() + 8 * offsets.len()) as u64,
        timings: GpuLoadTimings {
            plan_s,
            upload_s,
            rebuild_s,
        },
    })
}

fn launch(
    stream: &CudaStream,
    t: &DeviceTensor,
    d_base: &CudaSlice<u8>,
    d_offs: &CudaSlice<u64>,
    range: std::ops::Range<usize>,
    out: &mut CudaSlice<f32>,
    [f_bitstack, f_palette, f_nested, f_f16, f_f32]: &[CudaFunction; 5],
) -> Result<()> {
    let grid_1d = |n: u64| -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    };
    // One block of 256 threads per 256 columns of a row, one grid row per row.
    let grid_rows = |rows: usize, cols: usize| -> LaunchConfig {
        LaunchConfig {
            grid_dim: (cols.div_ceil(256).max(1) as u32, rows.max(1) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    };
    // SAFETY (every launch): argument lists match the kernels' signatures in
    // rebuild.cu, and `device_jobs` checked that every offset the kernel reads lies
    // inside the copied prefix, with the section lengths the layouts expect.
    match &t.job {
        TensorJob::F16 { offset, numel } | TensorJob::F32 { offset, numel } => {
            let f = if matches!(t.job, TensorJob::F16 { .. }) {
                f_f16
            } else {
                f_f32
            };
            let mut b = stream.launch_builder(f);
            b.arg(d_base).arg(offset).arg(numel).arg(out);
            unsafe { b.launch(grid_1d(*numel)) }.map_err(drv)?;
        }
        TensorJob::Palette {
            rows,
            cols,
            bits,
            group_rows,
            luts_offset,
            indices_offset,
        } => {
            let (r, c) = (dim(*rows, "rows")?, dim(*cols, "cols")?);
            let (bits, g) = (i32::from(*bits), dim(*group_rows, "group_rows")?);
            let cfg = grid_rows(*rows, *cols);
            let mut b = stream.launch_builder(f_palette);
            b.arg(d_base).arg(luts_offset).arg(indices_offset);
            b.arg(&r).arg(&c).arg(&bits).arg(&g).arg(out);
            unsafe { b.launch(cfg) }.map_err(drv)?;
        }
        TensorJob::NestedPalette {
            rows,
            cols,
            bits,
            group_cols,
            table_offset,
            params_offset,
            codes_offset,
            indices_offset,
            plane_offsets,
            rescale,
        } => {
            let (r, c) = (dim(*rows, "rows")?, dim(*cols, "cols")?);
            let (bits, gc) = (i32::from(*bits), dim(*group_cols, "group_cols")?);
            let n = dim(plane_offsets.len(), "refinement steps")?;
            let (rb, entries, rcodes) = match rescale {
                Some(x) => (i32::from(x.bits), x.entries_offset, x.codes_offset),
                None => (0, 0, 0),
            };
            let offs = d_offs.slice(range);
            let cfg = grid_rows(*rows, *cols);
            let mut b = stream.launch_builder(f_nested);
            b.arg(d_base).arg(&offs).arg(&n);
            b.arg(table_offset)
                .arg(params_offset)
                .arg(codes_offset)
                .arg(indices_offset);
            b.arg(&r).arg(&c).arg(&bits).arg(&gc);
            b.arg(&rb).arg(&entries).arg(&rcodes).arg(out);
            unsafe { b.launch(cfg) }.map_err(drv)?;
        }
        TensorJob::BitStack {
            rows,
            cols,
            rank,
            block_offsets,
            u_off,
            vt_off,
            scales_offset,
        } => {
            let n = dim(block_offsets.len(), "blocks")?;
            let (r, c, k) = (
                dim(*rows, "rows")?,
                dim(*cols, "cols")?,
                dim(*rank, "rank")?,
            );
            let scales: i64 = scales_offset.map_or(-1, |s| s as i64);
            let offs = d_offs.slice(range);
            let cfg = LaunchConfig {
                grid_dim: (
                    (*cols).div_ceil(TILE_COLS).max(1) as u32,
                    (*rows).div_ceil(TILE_ROWS).max(1) as u32,
                    1,
                ),
                block_dim: (THREADS_X as u32, THREADS_Y as u32, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(f_bitstack);
            b.arg(d_base).arg(&offs).arg(&n).arg(&r).arg(&c).arg(&k);
            b.arg(u_off).arg(vt_off).arg(&scales).arg(out);
            unsafe { b.launch(cfg) }.map_err(drv)?;
        }
    }
    Ok(())
}
