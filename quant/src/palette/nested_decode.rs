//! Rebuilding a nested palette at a width: the loader's hot loop.
//!
//! [`decode_nested`] is the fast kernel: per row, the base indices are unpacked a
//! byte at a time ([`unpack_indices`]), the loaded bit planes are appended eight
//! weights at a time (one 64-bit word through every plane), and one pass per block
//! looks the levels up in a 256-entry table (no bounds check per weight), applies
//! the block's correction and then its scale and offset; a block with at least
//! twice as many weights as the index width has levels (a 2-bit base with up to
//! two steps, blocks of 32) computes each level's final value once and looks every
//! weight up in that instead. Scratch buffers are reused across the rows a rayon
//! task decodes. [`decode_nested_scalar`] is its twin, written as the format reads (index
//! by index, then the correction over the row, then the scales over the row); both
//! round every multiply and add on its own in the same order, so they agree to the
//! bit (property test below), and so does the GPU kernel's twin
//! ([`crate::gpu::emulate`]). Into f16 or bf16, each row is decoded into an f32
//! scratch row and rounded to nearest even into the output ([`crate::dest`]):
//! the bits of decoding in f32 and converting (property test against the scalar
//! twin, converted value by value).

use rayon::prelude::*;

use super::rescaled::{MAX_RESCALE_BITS, RescaleView};
use super::scaled::CODE_BITS;
use super::{ScaledLayout, index_row_bytes, unpack_indices};
use crate::dest::{Element, Out};
use crate::palette::nested::plane_row_bytes;

/// Rebuilds a nested palette: base indices widened by one bit per plane, looked up
/// in `table` (the last plane's table, or the base table with no plane), corrected
/// per block by `rescale` (the last step's, when it has one: `t f + g`), then each
/// block's scale and offset. Slices must match `layout` (checked by the caller).
pub(crate) fn decode_nested(layout: &ScaledLayout, parts: &NestedParts<'_>) -> Vec<f32> {
    let mut out = crate::buffer::zeroed_f32(layout.rows * layout.cols);
    decode_nested_into(layout, parts, &mut out);
    out
}

/// What [`decode_nested_into`] reads besides the layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NestedParts<'a> {
    /// The table looked up (the last loaded step's, or the base's).
    pub table: &'a [f32],
    /// `[d, m]` per row.
    pub params: &'a [f32],
    /// Packed 6-bit block scale and offset codes.
    pub codes: &'a [u8],
    /// Packed base indices.
    pub indices: &'a [u8],
    /// Each loaded step's bit plane, in order.
    pub planes: &'a [&'a [u8]],
    /// The correction applied, if any.
    pub rescale: Option<&'a RescaleView<'a>>,
}

/// [`decode_nested_into`] into whichever element type `out` holds.
pub(crate) fn decode_nested_out(layout: &ScaledLayout, p: &NestedParts<'_>, out: Out<'_>) {
    match out {
        Out::F32(o) => decode_nested_into(layout, p, o),
        Out::F16(o) => decode_nested_into(layout, p, o),
        Out::Bf16(o) => decode_nested_into(layout, p, o),
    }
}

/// [`decode_nested`] into `out` (`rows * cols` values, checked by the caller: a
/// shorter `out` gets only its whole rows), rounded to `T`.
pub(crate) fn decode_nested_into<T: Element>(
    layout: &ScaledLayout,
    p: &NestedParts<'_>,
    out: &mut [T],
) {
    let (cols, gc, bits) = (layout.cols, layout.group_cols, layout.bits);
    let (table, params, codes, indices, planes, rescale) =
        (p.table, p.params, p.codes, p.indices, p.planes, p.rescale);
    if cols == 0 || gc == 0 {
        return;
    }
    let nb = cols.div_ceil(gc);
    let (rb, pb, cb) = (
        index_row_bytes(cols, bits),
        plane_row_bytes(cols),
        index_row_bytes(2 * nb, CODE_BITS),
    );
    // Every u8 index is in bounds: levels past the table read 0 and codes past the
    // correction table [1, 0], as the scalar twin's `get(..).unwrap_or(..)`.
    let mut lut = [0f32; 256];
    for (l, &t) in lut.iter_mut().zip(table) {
        *l = t;
    }
    let rescale = rescale.filter(|r| (1..=MAX_RESCALE_BITS).contains(&r.bits));
    let mut fg = [[1f32, 0f32]; 256];
    if let Some(r) = rescale {
        for (e, &x) in fg.iter_mut().zip(&r.entries) {
            *e = x;
        }
    }
    let rrb = rescale.map_or(0, |r| index_row_bytes(nb, r.bits));
    // Every widened index is below 2^(bits + planes) when that fits a u8, so a block
    // can look its weights up in a table of that many final values.
    let width = usize::from(bits) + planes.len();
    let levels = (width <= 8).then_some(1usize << width);
    out.par_chunks_mut(cols).enumerate().for_each_init(
        || {
            (
                vec![0u8; cols],
                vec![0u8; 2 * nb],
                vec![0u8; nb],
                Vec::new(),
            )
        },
        |(idx, c, rc, wide), (r, out_row)| {
            T::fill_via_f32(out_row, wide, |row| {
                unpack_indices(&indices[r * rb..(r + 1) * rb], bits, idx);
                append_planes(idx, planes, r * pb..(r + 1) * pb);
                unpack_indices(&codes[r * cb..(r + 1) * cb], CODE_BITS, c);
                // A short code slice leaves the row uncorrected, as the scalar twin does.
                let corrected = match rescale.and_then(|rs| rs.codes.get(r * rrb..(r + 1) * rrb)) {
                    Some(packed) => {
                        unpack_indices(packed, rescale.map_or(1, |rs| rs.bits), rc);
                        true
                    }
                    None => false,
                };
                let (d, m) = (params[2 * r], params[2 * r + 1]);
                let mut block_lut = [0f32; 256];
                for (b, (w, ix)) in row.chunks_mut(gc).zip(idx.chunks(gc)).enumerate() {
                    let (s, o) = (d * f32::from(c[2 * b]), m * f32::from(c[2 * b + 1]));
                    let fg_b = if corrected {
                        fg[usize::from(rc[b])]
                    } else {
                        [1.0, 0.0]
                    };
                    if levels.is_some_and(|n| 2 * n <= w.len()) {
                        // Fewer levels than half the block: each level's final value
                        // once (the same operations in the same order, so the same
                        // bits), then one lookup per weight.
                        let [f, g] = fg_b;
                        let n = levels.unwrap_or(0);
                        for (e, &t) in block_lut[..n].iter_mut().zip(&lut[..n]) {
                            *e = if corrected {
                                s * (f * t + g) + o
                            } else {
                                s * t + o
                            };
                        }
                        // Levels past `n` are never written: 0, as the twin's.
                        crate::kernels::lookup_f32(&block_lut[..n], ix, w);
                    } else if corrected {
                        let [f, g] = fg[usize::from(rc[b])];
                        for (v, &i) in w.iter_mut().zip(ix) {
                            let t = f * lut[usize::from(i)] + g;
                            *v = s * t + o;
                        }
                    } else {
                        for (v, &i) in w.iter_mut().zip(ix) {
                            *v = s * lut[usize::from(i)] + o;
                        }
                    }
                }
            });
        },
    );
}

/// Byte `t` of `SPREAD[b]` is bit `t` of `b`: eight plane bits as eight index bytes.
const SPREAD: [u64; 256] = super::pack::byte_fields(1);
/// Clears bit 0 of every byte: what a byte's top bit leaves in the next byte
/// when eight bytes shift left as one word.
const LOW_BITS_CLEAR: u64 = 0xfefe_fefe_fefe_fefe;

/// Appends each plane's bit (its `range` of bytes) to every index of `idx`, in
/// order: `ix = (ix << 1) | bit`, each index a `u8` whose top bit falls off, as
/// the scalar twin does. Eight indices go as one word through every plane; a
/// plane shorter than the row leaves the indices past its end as they are.
fn append_planes(idx: &mut [u8], planes: &[&[u8]], range: std::ops::Range<usize>) {
    if planes.is_empty() {
        return;
    }
    let whole = (idx.len() / 8).min(range.len());
    let (head, tail) = idx.split_at_mut(whole * 8);
    for (k, eight) in head.chunks_exact_mut(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(eight);
        let mut x = u64::from_le_bytes(w);
        for plane in planes {
            x = ((x << 1) & LOW_BITS_CLEAR) | SPREAD[usize::from(plane[range.start + k])];
        }
        eight.copy_from_slice(&x.to_le_bytes());
    }
    for plane in planes {
        if let Some(&byte) = plane[range.clone()].get(whole) {
            for (t, ix) in tail.iter_mut().enumerate() {
                *ix = (*ix << 1) | ((byte >> t) & 1);
            }
        }
    }
}

/// Scalar twin of [`decode_nested`]: every index widened bit by bit, the whole row
/// looked up, then corrected ([`RescaleView::apply_row`]), then scaled
/// ([`ScaledLayout::decode_with`]).
// Only the tests call the twin; it stays beside the kernel it specifies.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn decode_nested_scalar(layout: &ScaledLayout, parts: &NestedParts<'_>) -> Vec<f32> {
    let NestedParts {
        table,
        params,
        codes,
        indices,
        planes,
        rescale,
    } = *parts;
    let (rb, pb, cols) = (
        index_row_bytes(layout.cols, layout.bits),
        plane_row_bytes(layout.cols),
        layout.cols,
    );
    layout.decode_with(params, codes, |r, row| {
        let mut idx = vec![0u8; cols];
        super::unpack_indices_scalar(&indices[r * rb..(r + 1) * rb], layout.bits, &mut idx);
        for p in planes {
            let plane = &p[r * pb..(r + 1) * pb];
            for (j, ix) in idx.iter_mut().enumerate() {
                *ix = (*ix << 1) | ((plane[j / 8] >> (j % 8)) & 1);
            }
        }
        for (v, &i) in row.iter_mut().zip(&idx) {
            *v = table.get(usize::from(i)).copied().unwrap_or(0.0);
        }
        if let Some(rs) = rescale {
            rs.apply_row(r, layout.group_cols, row);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random bytes for every part (any index, code and correction code), odd
        /// shapes: the fast kernel and its scalar twin give the same bits, in f32
        /// and rounded to f16 and bf16.
        #[test]
        fn fast_and_scalar_decode_agree_to_the_bit(
            rows in prop::sample::select(vec![1usize, 3, 17]),
            cols in prop::sample::select(vec![1usize, 7, 65, 129, 383]),
            group in prop::sample::select(vec![1usize, 5, 32, 64]),
            bits in 2u8..=8,
            n_planes in 0usize..=6,
            rescale_bits in 0u8..=5,
            seed in any::<u64>(),
        ) {
            let n_planes = n_planes.min(usize::from(8 - bits));
            let group = group.min(cols);
            let l = ScaledLayout::new(rows, cols, bits, group).expect("layout");
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.random()).collect() };
            let (indices, codes) = (bytes(l.indices.1), bytes(l.codes.1));
            let planes: Vec<Vec<u8>> = (0..n_planes).map(|_| bytes(rows * plane_row_bytes(cols))).collect();
            let rcodes = bytes(rows * index_row_bytes(l.blocks(), rescale_bits.max(1)));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 1);
            let mut floats = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
            // A table shorter than the widest index reads 0 past its end in both.
            let table = floats((1usize << (usize::from(bits) + n_planes)) - usize::from(n_planes == 1));
            let params = floats(2 * rows);
            let entries: Vec<[f32; 2]> = floats(2 << rescale_bits).chunks_exact(2).map(|p| [p[0], p[1]]).collect();
            let view = RescaleView { bits: rescale_bits, entries, codes: &rcodes };
            let rescale = (rescale_bits > 0).then_some(&view);
            let planes: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            let parts = NestedParts { table: &table, params: &params, codes: &codes, indices: &indices, planes: &planes, rescale };
            let fast = decode_nested(&l, &parts);
            let slow = decode_nested_scalar(&l, &parts);
            prop_assert_eq!(fast.len(), rows * cols);
            let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits_of(&fast), bits_of(&slow));
            // Straight into 2-byte elements: the twin's f32 values rounded one by one.
            let mut half = vec![f16::ZERO; rows * cols];
            decode_nested_out(&l, &parts, Out::F16(&mut half));
            let want: Vec<u16> = slow.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            prop_assert_eq!(half.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
            let mut brain = vec![bf16::ZERO; rows * cols];
            decode_nested_out(&l, &parts, Out::Bf16(&mut brain));
            let want: Vec<u16> = slow.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            prop_assert_eq!(brain.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }
    }
}
