//! Laying a checkpoint out: which offset (relative to the data start) each spilled
//! payload gets, and the manifest that describes it. Encodings are handled only
//! through their sections ([`Encoding::view`]).

use super::align_u64;
use super::manifest::{BlockEntry, BlockRef, Encoding, Manifest, MetaEntry, Section, TensorEntry};
use crate::bitstack::{BlockId, MatrixBlocks};
use crate::error::{QuantError, Result};

fn invalid(field: &'static str, reason: String) -> QuantError {
    QuantError::InvalidConfig { field, reason }
}

/// Assigns every section an offset relative to the data start: resident sections
/// in tensor order, then blocks in `order`. `pending` holds each tensor's encoding
/// with its sections where they lie in the spill; the copies returned pair each
/// destination offset with its spilled section.
pub(super) fn layout(
    pending: &[(String, Vec<u64>, Encoding)],
    metadata: &[MetaEntry],
    order: &[BlockId],
    tensor_of: &[usize],
) -> (Placement, Vec<(u64, Section)>) {
    let mut at = 0u64;
    let mut copies = Vec::new();
    let mut place = |s: &Section, at: &mut u64| -> Section {
        let offset = align_u64(*at);
        *at = offset + s.len;
        copies.push((offset, *s));
        Section { offset, ..*s }
    };
    let mut tensors: Vec<TensorEntry> = Vec::with_capacity(pending.len());
    for (name, shape, p) in pending {
        let v = p.view();
        let resident: Vec<Section> = v
            .resident()
            .iter()
            .map(|(s, _)| place(s, &mut at))
            .collect();
        tensors.push(TensorEntry {
            name: name.clone(),
            shape: shape.clone(),
            encoding: v.with_sections(&resident, Vec::new()),
        });
    }
    // Blocks of each block-loaded tensor, placed in global order.
    let mut placed: Vec<Vec<BlockEntry>> = vec![Vec::new(); tensor_of.len()];
    let mut budget = vec![at];
    let mut block_order = Vec::with_capacity(order.len());
    for b in order {
        let t = tensor_of[b.matrix as usize];
        if let Some(entry) = pending[t].2.blocks().get(b.level as usize) {
            placed[b.matrix as usize].push(BlockEntry {
                section: place(&entry.section, &mut at),
                importance: entry.importance,
            });
        }
        budget.push(at);
        block_order.push(BlockRef {
            tensor: t as u32,
            level: b.level,
        });
    }
    for (m, entries) in placed.into_iter().enumerate() {
        let e = &mut tensors[tensor_of[m]].encoding;
        let moved = {
            let v = e.view();
            let resident: Vec<Section> = v.resident().iter().map(|(s, _)| *s).collect();
            v.with_sections(&resident, entries)
        };
        *e = moved;
    }
    // Only tensors that need a block (BitStack) bound the smallest budget.
    let needs: Vec<bool> = tensor_of
        .iter()
        .map(|&t| pending[t].2.needs_a_block())
        .collect();
    let mut seen: Vec<bool> = needs.iter().map(|n| !n).collect();
    let mut missing = needs.iter().filter(|&&n| n).count();
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
    let placement = Placement {
        tensors,
        block_order,
        budget,
        min_blocks,
        metadata: metadata.to_vec(),
        end: at,
    };
    (placement, copies)
}

/// The manifest with offsets relative to the data start.
pub(super) struct Placement {
    tensors: Vec<TensorEntry>,
    block_order: Vec<BlockRef>,
    budget: Vec<u64>,
    min_blocks: u32,
    metadata: Vec<MetaEntry>,
    /// End of the last section, relative to the data start.
    end: u64,
}

impl Placement {
    pub(super) fn manifest(&self, data_start: u64) -> Manifest {
        let tensors = self
            .tensors
            .iter()
            .map(|t| TensorEntry {
                name: t.name.clone(),
                shape: t.shape.clone(),
                encoding: t.encoding.map_sections(|s| Section {
                    offset: s.offset + data_start,
                    ..*s
                }),
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
