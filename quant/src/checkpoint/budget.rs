//! Budgets: how many of the globally ordered BitStack blocks a byte or bits-per-weight
//! limit buys, and the file prefix that holds them. [`Budget::fit`] is the one place
//! a limit becomes a budget.

use std::path::Path;

use super::format_err;
use super::manifest::Manifest;
use crate::error::{QuantError, Result};

/// How much of a checkpoint to load: what [`Budget::fit`] turns into a [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetLimit {
    /// The largest budget whose file prefix is at most this many bytes.
    Bytes(u64),
    /// The largest budget of at most this many bits per weight (section bytes over
    /// all weights, resident tensors included; see [`Budget::bits_per_weight`]).
    BitsPerWeight(f64),
    /// Exactly the first `n` blocks of the global order (at least the manifest's
    /// `min_blocks`).
    Blocks(usize),
    /// Every block: the whole file.
    Full,
}

/// What is loaded: the first `n_blocks` blocks of the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Bytes of the file needed: header, manifest, resident sections and the blocks.
    /// Nothing at or beyond this offset is read.
    pub prefix_len: u64,
    /// How many entries of [`Manifest::block_order`] are loaded.
    pub n_blocks: usize,
    /// Blocks loaded per tensor, indexed like [`Manifest::tensors`] (0 for tensors
    /// that are not BitStack). A BitStack tensor's loaded blocks are its levels
    /// `0..blocks_per_matrix[t]`.
    pub blocks_per_matrix: Vec<u32>,
    /// `8 * (prefix_len - data_start) / total weights`: section bytes (with their
    /// alignment padding) per weight over all tensors, resident ones included.
    pub bits_per_weight: f64,
}

impl Budget {
    /// The budget `limit` selects in manifest `m`: the most blocks within a byte or
    /// bits-per-weight limit, an exact block count, or the whole file. Errors name
    /// the limit and the smallest one the file allows.
    pub fn fit(m: &Manifest, limit: BudgetLimit) -> Result<Budget> {
        match limit {
            BudgetLimit::Bytes(n) => within_bytes(m, n),
            BudgetLimit::BitsPerWeight(b) => within_bits(m, b),
            BudgetLimit::Blocks(n) => with_blocks(m, n),
            BudgetLimit::Full => Ok(budget_at(m, m.block_order.len())),
        }
    }

    /// The first [`Budget::prefix_len`] bytes of `file` (the whole file or any prefix
    /// of it at least that long): everything this budget reads, and nothing more.
    /// The one place a budget's prefix is cut; `source` names the file in the error.
    pub fn prefix_of<'a>(&self, file: &'a [u8], source: &Path) -> Result<&'a [u8]> {
        usize::try_from(self.prefix_len)
            .ok()
            .and_then(|n| file.get(..n))
            .ok_or_else(|| {
                format_err(
                    source,
                    format!(
                        "truncated: the budget needs a prefix of {} bytes, only {} available",
                        self.prefix_len,
                        file.len()
                    ),
                )
            })
    }
}

/// The budget of the first `n_blocks` blocks (at least the manifest's `min_blocks`).
fn with_blocks(m: &Manifest, n_blocks: usize) -> Result<Budget> {
    let min = m.min_blocks as usize;
    if n_blocks < min || n_blocks > m.block_order.len() {
        return Err(QuantError::InvalidConfig {
            field: "n_blocks",
            reason: format!("expected {min}..={}, got {n_blocks}", m.block_order.len()),
        });
    }
    Ok(budget_at(m, n_blocks))
}

/// The budget of the first `n` blocks, `n <= block_order.len()`.
fn budget_at(m: &Manifest, n: usize) -> Budget {
    let mut per = vec![0u32; m.tensors.len()];
    for b in m.block_order.iter().take(n) {
        // A validated manifest names only existing tensors.
        if let Some(c) = per.get_mut(b.tensor as usize) {
            *c += 1;
        }
    }
    let prefix_len = m.budget_table.get(n).copied().unwrap_or(m.file_len);
    Budget {
        prefix_len,
        n_blocks: n,
        blocks_per_matrix: per,
        bits_per_weight: bits_per_weight(m, prefix_len),
    }
}

/// The most blocks whose prefix fits in `limit_bytes`.
fn within_bytes(m: &Manifest, limit_bytes: u64) -> Result<Budget> {
    let fits = m.budget_table.partition_point(|&b| b <= limit_bytes);
    let min = m.min_blocks as usize;
    if fits <= min {
        return Err(QuantError::InvalidConfig {
            field: "budget",
            reason: format!(
                "{limit_bytes} bytes is below the minimum of {} bytes (header, manifest, \
                 resident tensors and one block of every BitStack matrix)",
                m.budget_table.get(min).copied().unwrap_or(m.file_len)
            ),
        });
    }
    with_blocks(m, fits - 1)
}

/// The most blocks whose [`Budget::bits_per_weight`] is at most `bits`.
fn within_bits(m: &Manifest, bits: f64) -> Result<Budget> {
    if !bits.is_finite() || bits < 0.0 {
        return Err(QuantError::InvalidConfig {
            field: "bits_per_weight",
            reason: format!("expected a finite value >= 0, got {bits}"),
        });
    }
    let fits = m
        .budget_table
        .partition_point(|&b| bits_per_weight(m, b) <= bits);
    let min = m.min_blocks as usize;
    if fits <= min {
        return Err(QuantError::InvalidConfig {
            field: "bits_per_weight",
            reason: format!(
                "{bits} is below the minimum of {:.4} bits per weight",
                bits_per_weight(m, m.budget_table.get(min).copied().unwrap_or(m.file_len))
            ),
        });
    }
    with_blocks(m, fits - 1)
}

fn bits_per_weight(m: &Manifest, prefix_len: u64) -> f64 {
    8.0 * prefix_len.saturating_sub(m.data_start) as f64 / m.total_weights().max(1) as f64
}
