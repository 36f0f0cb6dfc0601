//! Laying a checkpoint out: which offset (relative to the data start) each spilled
//! payload gets, and the manifest that describes it.

use super::align_u64;
use super::manifest::{BlockEntry, BlockRef, Encoding, Manifest, MetaEntry, Section, TensorEntry};
use crate::bitstack::{BlockId, MatrixBlocks};
use crate::error::{QuantError, Result};

fn invalid(field: &'static str, reason: String) -> QuantError {
    QuantError::InvalidConfig { field, reason }
}

/// A payload already written to the spill.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spilled {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

/// A tensor whose payloads are in the spill.
#[derive(Debug)]
pub(super) enum Pending {
    F16(Spilled),
    F32(Spilled),
    BitStack {
        rank: u32,
        scales: Option<Spilled>,
        blocks: Vec<(Spilled, f64)>,
    },
    Palette {
        bits: u8,
        group_rows: u32,
        data: Spilled,
    },
    ScaledPalette {
        bits: u8,
        group_cols: u32,
        data: Spilled,
    },
}

/// Assigns every section an offset relative to the data start: resident sections
/// in tensor order, then blocks in `order`.
pub(super) fn layout(
    pending: &[(String, Vec<u64>, Pending)],
    metadata: &[MetaEntry],
    order: &[BlockId],
    tensor_of: &[usize],
) -> (Plan, Vec<(u64, Spilled)>) {
    let mut at = 0u64;
    let mut copies = Vec::new();
    let place = |s: Spilled, at: &mut u64, copies: &mut Vec<(u64, Spilled)>| -> Section {
        let offset = align_u64(*at);
        *at = offset + s.len;
        copies.push((offset, s));
        Section {
            offset,
            len: s.len,
            crc32c: s.crc,
        }
    };
    let mut tensors: Vec<TensorEntry> = Vec::with_capacity(pending.len());
    for (name, shape, p) in pending {
        let encoding = match p {
            Pending::F16(s) => Encoding::F16 {
                data: place(*s, &mut at, &mut copies),
            },
            Pending::F32(s) => Encoding::F32 {
                data: place(*s, &mut at, &mut copies),
            },
            Pending::BitStack { rank, scales, .. } => Encoding::BitStack {
                rank: *rank,
                scales: scales.map(|s| place(s, &mut at, &mut copies)),
                blocks: Vec::new(),
            },
            Pending::Palette {
                bits,
                group_rows,
                data,
            } => Encoding::Palette {
                bits: *bits,
                group_rows: *group_rows,
                data: place(*data, &mut at, &mut copies),
            },
            Pending::ScaledPalette {
                bits,
                group_cols,
                data,
            } => Encoding::ScaledPalette {
                bits: *bits,
                group_cols: *group_cols,
                data: place(*data, &mut at, &mut copies),
            },
        };
        tensors.push(TensorEntry {
            name: name.clone(),
            shape: shape.clone(),
            encoding,
        });
    }
    // Blocks of each BitStack tensor, placed in global order.
    let mut placed: Vec<Vec<BlockEntry>> = vec![Vec::new(); tensor_of.len()];
    let mut budget = vec![at];
    let mut block_order = Vec::with_capacity(order.len());
    for b in order {
        let t = tensor_of[b.matrix as usize];
        if let Pending::BitStack { blocks, .. } = &pending[t].2 {
            let (s, importance) = blocks[b.level as usize];
            placed[b.matrix as usize].push(BlockEntry {
                section: place(s, &mut at, &mut copies),
                importance,
            });
        }
        budget.push(at);
        block_order.push(BlockRef {
            tensor: t as u32,
            level: b.level,
        });
    }
    for (m, entries) in placed.into_iter().enumerate() {
        if let Encoding::BitStack { blocks, .. } = &mut tensors[tensor_of[m]].encoding {
            *blocks = entries;
        }
    }
    let mut seen = vec![false; tensor_of.len()];
    let mut missing = tensor_of.len();
    let mut min_blocks = 0u32;
    for (j, b) in order.iter().enumerate() {
        if missing == 0 {
            break;
        }
        if !std::mem::replace(&mut seen[b.matrix as usize], true) {
            missing -= 1;
        }
        min_blocks = j as u32 + 1;
    }
    let plan = Plan {
        tensors,
        block_order,
        budget,
        min_blocks,
        metadata: metadata.to_vec(),
        end: at,
    };
    (plan, copies)
}

/// The manifest with offsets relative to the data start.
pub(super) struct Plan {
    tensors: Vec<TensorEntry>,
    block_order: Vec<BlockRef>,
    budget: Vec<u64>,
    min_blocks: u32,
    metadata: Vec<MetaEntry>,
    /// End of the last section, relative to the data start.
    end: u64,
}

impl Plan {
    pub(super) fn manifest(&self, data_start: u64) -> Manifest {
        let shift = |s: &Section| Section {
            offset: s.offset + data_start,
            ..*s
        };
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let encoding = match &t.encoding {
                    Encoding::F16 { data } => Encoding::F16 { data: shift(data) },
                    Encoding::F32 { data } => Encoding::F32 { data: shift(data) },
                    Encoding::BitStack {
                        rank,
                        scales,
                        blocks,
                    } => Encoding::BitStack {
                        rank: *rank,
                        scales: scales.as_ref().map(shift),
                        blocks: blocks
                            .iter()
                            .map(|b| BlockEntry {
                                section: shift(&b.section),
                                importance: b.importance,
                            })
                            .collect(),
                    },
                    Encoding::Palette {
                        bits,
                        group_rows,
                        data,
                    } => Encoding::Palette {
                        bits: *bits,
                        group_rows: *group_rows,
                        data: shift(data),
                    },
                    Encoding::ScaledPalette {
                        bits,
                        group_cols,
                        data,
                    } => Encoding::ScaledPalette {
                        bits: *bits,
                        group_cols: *group_cols,
                        data: shift(data),
                    },
                };
                TensorEntry {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    encoding,
                }
            })
            .collect();
        Manifest {
            tensors,
            block_order: self.block_order.clone(),
            budget_table: self.budget.iter().map(|b| b + data_start).collect(),
            min_blocks: self.min_blocks,
            data_start,
            file_len: self.end + data_start,
            metadata: self.metadata.clone(),
        }
    }
}

pub(super) fn check_explicit(order: &[BlockId], mbs: &[MatrixBlocks]) -> Result<()> {
    let mut next = vec![0usize; mbs.len()];
    for (j, b) in order.iter().enumerate() {
        let m = b.matrix as usize;
        let Some(n) = next.get_mut(m) else {
            return Err(invalid(
                "block order",
                format!("entry {j} names matrix {m}, only {} exist", mbs.len()),
            ));
        };
        if b.level as usize != *n || *n >= mbs[m].importance.len() {
            return Err(invalid(
                "block order",
                format!(
                    "entry {j} is matrix {m} level {}, expected level {} of {}",
                    b.level,
                    n,
                    mbs[m].importance.len()
                ),
            ));
        }
        *n += 1;
    }
    if let Some(m) = (0..mbs.len()).find(|&m| next[m] != mbs[m].importance.len()) {
        return Err(invalid(
            "block order",
            format!(
                "matrix {m} has {} of its {} blocks in the order",
                next[m],
                mbs[m].importance.len()
            ),
        ));
    }
    Ok(())
}
