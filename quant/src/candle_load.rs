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

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::checkpoint::{Budget, MetaEntry, Reader};
use crate::error::Result;

// Where they lived before the split; kept so `candle_load::{BudgetLimit, ...}` still works.
pub use crate::checkpoint::{BudgetLimit, MappedCheckpoint};

/// What [`MappedCheckpoint::load`] returns.
#[derive(Debug)]
pub struct LoadedWeights {
    /// Every tensor of the checkpoint, rebuilt at the budget, by name.
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

    /// [`MappedCheckpoint::load`] with the tensors converted to `dtype` (rebuilding
    /// happens in f32 on the host; the conversion on `device`).
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
