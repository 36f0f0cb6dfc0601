//! Where each component's code sits in a transform-codec code.
//!
//! A code is one little-endian bitstream: slot `t` holds `widths[t]` bits starting at
//! bit `bit_offsets[t]`, least significant bit first. Slots are components in an order
//! chosen so that scoring is a few simple loops:
//!
//! | section | contents |
//! |---|---|
//! | aligned blocks, widths 8, 7, ..., 1 | for each width `w`, `8 g_w` components in `g_w` groups of `w` bytes: a group of 8 codes is exactly `w` whole bytes |
//! | tail | the `< 8` leftover components of each width, widest first, packed back to back |
//!
//! Every aligned block starts on a byte, so a kernel reads a group as one `u64` of `w`
//! bytes and shifts out eight codes with constant shifts: no odd width needs a bit
//! reader or a widened layout. Only the tail (at most 7 components per width, a few
//! dozen bits) goes through the generic bit reader. Aligned bits are whole bytes, so
//! when the widths sum to `8 * bytes` the tail is whole bytes too and nothing is
//! padded; any other total is padded with zero bits to the next byte.
//!
//! Zero-width components have no slot: they are constants of the codec.

use std::ops::Range;

use super::alloc::MAX_BITS;

/// A run of slots of one width, in whole groups of 8, starting on a byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Bits per code.
    pub width: u8,
    /// The slots it covers (a multiple of 8 of them).
    pub slots: Range<usize>,
    /// Byte where the block starts; it spans `slots.len() / 8 * width` bytes.
    pub byte_offset: usize,
}

impl Block {
    /// The block's bytes within `code`.
    #[inline]
    pub fn bytes<'a>(&self, code: &'a [u8]) -> &'a [u8] {
        let len = self.slots.len() / 8 * usize::from(self.width);
        &code[self.byte_offset..self.byte_offset + len]
    }
}

/// The slot order, widths and bit positions of a transform code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `order[t]` is the component stored in slot `t`.
    order: Vec<u32>,
    /// Bits of slot `t`, `1..=8`.
    widths: Vec<u8>,
    /// First bit of slot `t` in the code.
    bit_offsets: Vec<u32>,
    /// The aligned blocks, widest first.
    blocks: Vec<Block>,
    /// Slots of the tail.
    tail: Range<usize>,
    /// Bytes per code.
    code_len: usize,
}

impl Layout {
    /// The layout for components of the given widths (`0..=8` bits each).
    pub fn new(component_widths: &[u8]) -> Layout {
        let mut order = Vec::new();
        let mut widths = Vec::new();
        let mut blocks = Vec::new();
        let mut tail = Vec::new();
        let mut byte = 0usize;
        for width in (1..=MAX_BITS).rev() {
            let comps: Vec<u32> = (0..component_widths.len() as u32)
                .filter(|&j| component_widths[j as usize] == width)
                .collect();
            let aligned = comps.len() / 8 * 8;
            if aligned > 0 {
                blocks.push(Block {
                    width,
                    slots: order.len()..order.len() + aligned,
                    byte_offset: byte,
                });
                byte += aligned / 8 * usize::from(width);
                order.extend_from_slice(&comps[..aligned]);
                widths.resize(order.len(), width);
            }
            tail.extend(comps[aligned..].iter().map(|&j| (j, width)));
        }
        let tail_start = order.len();
        let mut bit_offsets: Vec<u32> = Vec::with_capacity(component_widths.len());
        for block in &blocks {
            let first = (block.byte_offset * 8) as u32;
            bit_offsets
                .extend((0..block.slots.len() as u32).map(|i| first + i * u32::from(block.width)));
        }
        let mut bit = (byte * 8) as u32;
        for (j, width) in tail {
            order.push(j);
            widths.push(width);
            bit_offsets.push(bit);
            bit += u32::from(width);
        }
        Layout {
            tail: tail_start..order.len(),
            order,
            widths,
            bit_offsets,
            blocks,
            code_len: (bit as usize).div_ceil(8),
        }
    }

    /// Bytes per code.
    pub fn code_len(&self) -> usize {
        self.code_len
    }

    /// Number of slots (components with at least one bit).
    pub fn slots(&self) -> usize {
        self.order.len()
    }

    /// The component in each slot.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// The width of each slot.
    pub fn widths(&self) -> &[u8] {
        &self.widths
    }

    /// The first bit of each slot in the code.
    pub fn bit_offsets(&self) -> &[u32] {
        &self.bit_offsets
    }

    /// The aligned blocks, widest first.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The tail's slots.
    pub fn tail(&self) -> Range<usize> {
        self.tail.clone()
    }

    /// Code of slot `t`, read bit by bit: the obviously-correct reader the scalar
    /// twins use.
    pub fn read_scalar(&self, code: &[u8], t: usize) -> u8 {
        let first = self.bit_offsets[t] as usize;
        let mut v = 0u8;
        for i in 0..usize::from(self.widths[t]) {
            let bit = first + i;
            v |= ((code[bit / 8] >> (bit % 8)) & 1) << i;
        }
        v
    }

    /// Code of slot `t` from a two-byte window: the tail reader of the fast kernels.
    #[inline]
    pub fn read(&self, code: &[u8], t: usize) -> u8 {
        let bit = self.bit_offsets[t] as usize;
        let lo = u16::from(code[bit / 8]);
        let hi = u16::from(code.get(bit / 8 + 1).copied().unwrap_or(0));
        let word = (lo | hi << 8) >> (bit % 8);
        (word & ((1u16 << self.widths[t]) - 1)) as u8
    }

    /// Writes one code per slot (`slot_codes[t] < 2^widths[t]`) into `code`, which
    /// must be [`Layout::code_len`] bytes; padding bits are zero.
    pub fn pack(&self, slot_codes: &[u8], code: &mut [u8]) {
        code.fill(0);
        for (t, &c) in slot_codes.iter().enumerate() {
            let bit = self.bit_offsets[t] as usize;
            let word = u16::from(c) << (bit % 8);
            code[bit / 8] |= word as u8;
            if word > 0xff {
                code[bit / 8 + 1] |= (word >> 8) as u8;
            }
        }
    }

    /// Reads every slot's code into `slot_codes` ([`Layout::slots`] values).
    pub fn unpack(&self, code: &[u8], slot_codes: &mut [u8]) {
        for (t, c) in slot_codes.iter_mut().enumerate() {
            *c = self.read(code, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_are_aligned_and_tail_fills_the_rest() {
        // 9 components of 8 bits, 8 of 3 bits, 3 of 1 bit, 2 of 0 bits.
        let mut widths = vec![8u8; 9];
        widths.extend([3u8; 8]);
        widths.extend([1u8; 3]);
        widths.extend([0u8; 2]);
        let l = Layout::new(&widths);
        assert_eq!(l.slots(), 20);
        assert_eq!(
            l.blocks(),
            &[
                Block {
                    width: 8,
                    slots: 0..8,
                    byte_offset: 0
                },
                Block {
                    width: 3,
                    slots: 8..16,
                    byte_offset: 8
                },
            ]
        );
        assert_eq!(l.tail(), 16..20);
        assert_eq!(&l.order()[16..], &[8, 17, 18, 19]);
        assert_eq!(&l.widths()[16..], &[8, 1, 1, 1]);
        // 72 + 24 + 3 bits = 99 bits -> 13 bytes.
        assert_eq!(l.code_len(), 13);
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trip(
            widths in prop::collection::vec(0u8..=8, 1..130),
            seed in any::<u64>(),
        ) {
            let l = Layout::new(&widths);
            let total: usize = widths.iter().map(|&w| usize::from(w)).sum();
            prop_assert_eq!(l.code_len(), total.div_ceil(8));
            let mut sorted = l.order().to_vec();
            sorted.sort_unstable();
            let coded: Vec<u32> = (0..widths.len() as u32).filter(|&j| widths[j as usize] > 0).collect();
            prop_assert_eq!(sorted, coded);
            let codes: Vec<u8> = (0..l.slots())
                .map(|t| {
                    let r = seed.wrapping_mul(6364136223846793005).wrapping_add((t as u64).wrapping_mul(1442695040888963407));
                    ((r >> 33) as u8) & ((1u16 << l.widths()[t]) - 1) as u8
                })
                .collect();
            let mut code = vec![0xAAu8; l.code_len()];
            l.pack(&codes, &mut code);
            let mut back = vec![0u8; l.slots()];
            l.unpack(&code, &mut back);
            prop_assert_eq!(&back, &codes);
            for (t, &c) in codes.iter().enumerate() {
                prop_assert_eq!(l.read_scalar(&code, t), c);
            }
            // Padding bits are zero.
            if !total.is_multiple_of(8) {
                let last = code[code.len() - 1];
                prop_assert_eq!(last >> (total % 8), 0);
            }
        }
    }

    #[test]
    fn every_width_round_trips_at_odd_lengths() {
        for width in 1..=8u8 {
            for n in [1usize, 7, 8, 65, 129] {
                let l = Layout::new(&vec![width; n]);
                let codes: Vec<u8> = (0..n)
                    .map(|i| ((i * 37 + 11) % (1usize << width)) as u8)
                    .collect();
                let mut code = vec![0u8; l.code_len()];
                // Slots are components in order when all widths are equal.
                l.pack(&codes, &mut code);
                let mut back = vec![0u8; n];
                l.unpack(&code, &mut back);
                assert_eq!(back, codes, "width {width} n {n}");
                assert_eq!(l.code_len(), (n * usize::from(width)).div_ceil(8));
            }
        }
    }
}
