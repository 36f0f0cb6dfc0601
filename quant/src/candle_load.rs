//! Loading a budget of a `.octet` checkpoint as candle tensors.
//!
//! The file, its budgets and the prefix a budget needs are
//! [`crate::checkpoint::mapped`] (no candle there); this module only turns the
//! rebuilt weights into tensors. [`MappedCheckpoint::load`] fits a [`BudgetLimit`]
//! and hands only the budget's prefix of the file to the [`Reader`] that rebuilds the
//! weights, so no byte past it is ever touched: one contiguous read per load
//! (DESIGN.md, "Checkpoint file"). Tensors come back as a `HashMap<String, Tensor>`
//! on the chosen [`Device`], which is exactly what
//! `candle_nn::VarBuilder::from_tensors` takes.
//!
//! ```no_run
//! use candle_core::Device;
//! use octet_quant::candle_load::{BudgetLimit, MappedCheckpoint};
//!
//! let ckpt = MappedCheckpoint::open("smollm2.octet")?;
//! let loaded = ckpt.load(BudgetLimit::Bytes(60_000_000), &Device::Cpu)?;
//! println!("{} tensors, {:.2} bits per weight", loaded.tensors.len(), loaded.budget.bits_per_weight);
//! # Ok::<(), octet_quant::QuantError>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::checkpoint::{Budget, MetaEntry, Reader};
use crate::dest::Element;
use crate::error::{QuantError, Result};

// Where they lived before the split; kept so `candle_load::{BudgetLimit, ...}` still works.
pub use crate::checkpoint::{BudgetLimit, MappedCheckpoint};

/// What [`MappedCheckpoint::load`] returns.
#[derive(Debug)]
pub struct LoadedWeights {
    /// Every tensor of the checkpoint, rebuilt at the budget, by name. Loaded as f32,
    /// f16 or bf16 on the CPU they are views of one buffer (freed with the last of them), so
    /// `to_device` on one would copy the whole buffer: load on the target device
    /// instead, or `copy()` the tensor first.
    pub tensors: HashMap<String, Tensor>,
    /// The budget that was loaded.
    pub budget: Budget,
    /// The checkpoint's metadata (model config, provenance).
    pub metadata: Vec<MetaEntry>,
}

impl MappedCheckpoint {
    /// Fits `limit` ([`Budget::fit`]), then rebuilds every tensor from the budget's
    /// prefix of the file on `device` as f32.
    pub fn load(&self, limit: BudgetLimit, device: &Device) -> Result<LoadedWeights> {
        self.load_as(limit, device, DType::F32)
    }

    /// [`MappedCheckpoint::load`] with the tensors as `dtype`. On the CPU, f32, f16
    /// and bf16 are rebuilt straight into one buffer of that type, each value
    /// rounded to nearest even from the f32 decode (the bits of loading as f32 and
    /// calling `to_dtype`, at half the memory to materialise for the 2-byte types);
    /// otherwise rebuilding happens in f32 on the host and the conversion on `device`.
    pub fn load_as(
        &self,
        limit: BudgetLimit,
        device: &Device,
        dtype: DType,
    ) -> Result<LoadedWeights> {
        let budget = Budget::fit(self.reader()?.manifest(), limit)?;
        load_budget(self.prefix(&budget)?, self.path(), &budget, device, dtype)
    }
}

/// Rebuilds every tensor at `budget` from `prefix` (the first
/// [`Budget::prefix_len`] bytes of the file, or more) and places it on `device` as
/// `dtype`. Tensors are rebuilt in parallel on the rayon pool.
pub fn load_budget(
    prefix: &[u8],
    source: &Path,
    budget: &Budget,
    device: &Device,
    dtype: DType,
) -> Result<LoadedWeights> {
    let reader = Reader::with_source(prefix, source)?;
    let m = reader.manifest();
    if device.is_cpu() && matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        let tensors = match dtype {
            DType::F16 => rebuild_in_one_buffer::<f16>(&reader, budget, prefix.len())?,
            DType::BF16 => rebuild_in_one_buffer::<bf16>(&reader, budget, prefix.len())?,
            _ => rebuild_in_one_buffer::<f32>(&reader, budget, prefix.len())?,
        };
        return Ok(LoadedWeights {
            tensors,
            budget: budget.clone(),
            metadata: m.metadata.clone(),
        });
    }
    let rebuilt: Vec<Vec<f32>> = (0..m.tensors.len())
        .into_par_iter()
        .map(|t| reader.rebuild_index(t, budget))
        .collect::<Result<_>>()?;
    let mut tensors = HashMap::with_capacity(rebuilt.len());
    for (entry, data) in m.tensors.iter().zip(rebuilt) {
        // Shapes were validated against the element count when the manifest was read.
        let shape: Vec<usize> = entry.shape.iter().map(|&d| d as usize).collect();
        let t = Tensor::from_vec(data, shape, device)?;
        let t = if dtype == DType::F32 {
            t
        } else {
            t.to_dtype(dtype)?
        };
        tensors.insert(entry.name.clone(), t);
    }
    Ok(LoadedWeights {
        tensors,
        budget: budget.clone(),
        metadata: m.metadata.clone(),
    })
}

/// Every tensor rebuilt in place into one buffer of `T` (f32, f16 or bf16) on the
/// CPU, handed out as views of it: one allocation advised to use huge pages
/// ([`crate::buffer`]) instead of one per tensor, whose 4 KiB page faults cost as
/// much as the decoding.
/// `available` is the bytes the reader holds: no encoding stores under one bit per
/// weight, so a file whose budget claims more than 8 weights per byte is refused
/// before the buffer is allocated (the sections are checksummed only as each tensor
/// is rebuilt).
fn rebuild_in_one_buffer<T: Element + WithDType>(
    reader: &Reader<'_>,
    budget: &Budget,
    available: usize,
) -> Result<HashMap<String, Tensor>> {
    let m = reader.manifest();
    let too_big = || QuantError::InvalidConfig {
        field: "tensor shapes",
        reason: format!(
            "the tensors' element counts exceed 8 per byte of the {available}-byte prefix"
        ),
    };
    let sizes: Vec<usize> = m
        .tensors
        .iter()
        .map(|e| usize::try_from(e.numel()).map_err(|_| too_big()))
        .collect::<Result<_>>()?;
    let total = sizes
        .iter()
        .try_fold(0usize, |a, &n| a.checked_add(n))
        .filter(|&n| n <= available.saturating_mul(8))
        .ok_or_else(too_big)?;
    let mut all = crate::buffer::zeroed::<T>(total);
    let mut parts = Vec::with_capacity(sizes.len());
    let mut rest = all.as_mut_slice();
    for &n in &sizes {
        let (part, tail) = rest.split_at_mut(n);
        parts.push(part);
        rest = tail;
    }
    parts
        .into_par_iter()
        .enumerate()
        .try_for_each(|(t, out)| reader.rebuild_index_into(t, budget, T::out(out)))?;
    let all = Tensor::from_vec(all, total, &Device::Cpu)?;
    let mut tensors = HashMap::with_capacity(sizes.len());
    let mut offset = 0;
    for (entry, n) in m.tensors.iter().zip(sizes) {
        let shape: Vec<usize> = entry.shape.iter().map(|&d| d as usize).collect();
        tensors.insert(
            entry.name.clone(),
            all.narrow(0, offset, n)?.reshape(shape)?,
        );
        offset += n;
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitstack::{BitStackConfig, RankPolicy, decompose};
    use crate::checkpoint::{BlockOrdering, CheckpointWriter};

    fn write_checkpoint(path: &Path) -> Vec<f32> {
        let (rows, cols) = (33, 40);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i % cols) as f32 / 8.0))
            .collect();
        let cfg = BitStackConfig {
            n_iter: 6,
            rank: RankPolicy::Fixed(2),
            ..Default::default()
        };
        let scales: Vec<f32> = (0..cols).map(|j| 0.5 + j as f32 / 10.0).collect();
        let mut writer = CheckpointWriter::in_memory();
        writer
            .add_f16("norm", &[7], &[1.0, 0.5, 0.25, 2.0, -1.0, 3.0, 0.0])
            .expect("fits f16");
        writer
            .add_bitstack(
                "a",
                &decompose(&w, rows, cols, Some(&scales), &cfg).expect("decomposes"),
            )
            .expect("adds");
        let w2: Vec<f32> = w.iter().rev().map(|x| x * 0.3).collect();
        writer
            .add_bitstack(
                "b",
                &decompose(&w2, rows, cols, None, &cfg).expect("decomposes"),
            )
            .expect("adds");
        writer.add_metadata("k", "v").expect("small");
        let mut bytes = Vec::new();
        writer
            .finish(&BlockOrdering::default(), &mut bytes)
            .expect("writes");
        std::fs::write(path, &bytes).expect("temp file");
        w
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("f32 tensor")
    }

    /// The bits of an f16 or bf16 tensor, flattened.
    fn two_byte_bits(t: &Tensor) -> Vec<u16> {
        let t = t.flatten_all().expect("flattens");
        match t.dtype() {
            DType::F16 => t
                .to_vec1::<f16>()
                .expect("f16")
                .iter()
                .map(|x| x.to_bits())
                .collect(),
            _ => t
                .to_vec1::<bf16>()
                .expect("bf16")
                .iter()
                .map(|x| x.to_bits())
                .collect(),
        }
    }

    /// The CPU load (views of one buffer, encodings rebuilt in place) gives the
    /// reader's own rebuild, to the bit, for every encoding at every budget; so does
    /// the per-tensor path other dtypes take; loaded straight as f16 or bf16 it
    /// gives the bits of that rebuild converted by candle's `to_dtype`.
    #[test]
    fn one_buffer_views_equal_the_reader_at_every_budget() {
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (bytes, m, budgets) in crate::checkpoint::testutil::every_fixture_budget() {
            let reader = Reader::new(&bytes).expect("valid");
            for budget in budgets {
                let n = budget.n_blocks;
                let src = Path::new("in memory");
                let one =
                    load_budget(&bytes, src, &budget, &Device::Cpu, DType::F32).expect("loads");
                let each =
                    load_budget(&bytes, src, &budget, &Device::Cpu, DType::F64).expect("loads");
                let half =
                    load_budget(&bytes, src, &budget, &Device::Cpu, DType::F16).expect("loads");
                let brain =
                    load_budget(&bytes, src, &budget, &Device::Cpu, DType::BF16).expect("loads");
                assert_eq!(one.tensors.len(), m.tensors.len());
                for (t, e) in m.tensors.iter().enumerate() {
                    let want = reader.rebuild_index(t, &budget).expect("rebuilds");
                    let got = &one.tensors[&e.name];
                    let dims: Vec<usize> = e.shape.iter().map(|&d| d as usize).collect();
                    assert_eq!(got.dims(), dims.as_slice(), "{}", e.name);
                    assert_eq!(bits(values(got)), bits(want.clone()), "{} at {n}", e.name);
                    let wide: Vec<f64> = each.tensors[&e.name]
                        .flatten_all()
                        .and_then(|t| t.to_vec1())
                        .expect("f64 tensor");
                    let via_f32 =
                        Tensor::from_vec(want.clone(), want.len(), &Device::Cpu).expect("tensor");
                    let want64: Vec<f64> = want.iter().map(|&x| f64::from(x)).collect();
                    assert_eq!(wide, want64, "{} at {n}", e.name);
                    for (dtype, loaded) in [(DType::F16, &half), (DType::BF16, &brain)] {
                        let got = &loaded.tensors[&e.name];
                        assert_eq!(got.dims(), dims.as_slice(), "{}", e.name);
                        assert_eq!(got.dtype(), dtype);
                        assert_eq!(
                            two_byte_bits(got),
                            two_byte_bits(&via_f32.to_dtype(dtype).expect("converts")),
                            "{} at {n} as {dtype:?}",
                            e.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_copy_at_the_prefix_loads_the_same_tensors() {
        let dir = std::env::temp_dir().join(format!("octet-candle-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let full_path = dir.join("full.octet");
        write_checkpoint(&full_path);
        let full = MappedCheckpoint::open(&full_path).expect("maps");
        let file_len = full.bytes().len() as u64;
        let n_blocks = full.reader().expect("valid").manifest().block_order.len();
        for limit in [
            BudgetLimit::Blocks(2),
            BudgetLimit::Bytes(file_len * 2 / 3),
            BudgetLimit::Blocks(n_blocks - 1),
        ] {
            let loaded = full.load(limit, &Device::Cpu).expect("loads");
            let prefix_len = loaded.budget.prefix_len;
            assert!(
                prefix_len < file_len,
                "{limit:?} should not need the whole file"
            );
            // A copy with every byte past the prefix cut off: if the loader read any of
            // them it would fail (truncated) or differ.
            let cut_path = dir.join("cut.octet");
            std::fs::write(&cut_path, &full.bytes()[..prefix_len as usize]).expect("temp file");
            let cut = MappedCheckpoint::open(&cut_path).expect("maps");
            let again = cut.load(limit, &Device::Cpu).expect("prefix is enough");
            assert_eq!(again.budget, loaded.budget);
            assert_eq!(again.metadata, loaded.metadata);
            assert_eq!(loaded.tensors.len(), 3);
            for (name, t) in &loaded.tensors {
                assert_eq!(t.dims(), again.tensors[name].dims());
                assert_eq!(
                    values(t),
                    values(&again.tensors[name]),
                    "{name} at {limit:?}"
                );
            }
            // One byte less than the prefix is not enough.
            std::fs::write(&cut_path, &full.bytes()[..prefix_len as usize - 1]).expect("temp file");
            let short = MappedCheckpoint::open(&cut_path).expect("maps");
            let err = short.load(limit, &Device::Cpu).expect_err("prefix is cut");
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn full_budget_matches_the_reader_and_more_blocks_reduce_error() {
        let dir = std::env::temp_dir().join(format!("octet-candle-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("m.octet");
        let w = write_checkpoint(&path);
        let ckpt = MappedCheckpoint::open(&path).expect("maps");
        let reader = ckpt.reader().expect("valid");
        let full = ckpt.load(BudgetLimit::Full, &Device::Cpu).expect("loads");
        assert_eq!(full.budget.prefix_len, ckpt.bytes().len() as u64);
        let direct = reader
            .rebuild_tensor(
                "a",
                &Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full"),
            )
            .expect("rebuilds");
        assert_eq!(values(&full.tensors["a"]), direct);
        assert_eq!(full.tensors["a"].dims(), &[33, 40]);
        assert_eq!(
            values(&full.tensors["norm"]),
            vec![1.0, 0.5, 0.25, 2.0, -1.0, 3.0, 0.0]
        );
        let err = |n: usize| -> f64 {
            let l = ckpt
                .load(BudgetLimit::Blocks(n), &Device::Cpu)
                .expect("loads");
            values(&l.tensors["a"])
                .iter()
                .zip(&w)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum()
        };
        let min = reader.manifest().min_blocks as usize;
        let total = reader.manifest().block_order.len();
        assert!(err(total) < err(min));
        let half = ckpt
            .load_as(BudgetLimit::Full, &Device::Cpu, DType::F16)
            .expect("loads");
        assert_eq!(half.tensors["a"].dtype(), DType::F16);
        assert!(ckpt.load(BudgetLimit::Bytes(10), &Device::Cpu).is_err());
        assert!(
            ckpt.load(BudgetLimit::BitsPerWeight(f64::NAN), &Device::Cpu)
                .is_err()
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
