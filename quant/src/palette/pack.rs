//! Packed `b`-bit palette indices and the decode kernel (unpack + table lookup).
//!
//! Indices of one row form a little-endian bit stream: index `j` occupies bits
//! `j*b .. (j+1)*b` of the row, counting from the least significant bit of the row's
//! first byte. Each row is padded to a whole byte ([`index_row_bytes`]), so rows can
//! be decoded independently.

/// Bytes per row of `cols` indices of `bits` bits.
pub fn index_row_bytes(cols: usize, bits: u8) -> usize {
    (cols * usize::from(bits)).div_ceil(8)
}

/// Packs one row of indices (each `< 2^bits`) into `out` ([`index_row_bytes`] bytes).
///
/// # Panics
/// If `out` has the wrong length or `bits` is not in `1..=8`.
pub fn pack_row(indices: &[u8], bits: u8, out: &mut [u8]) {
    assert!((1..=8).contains(&bits), "pack_row: bits {bits}");
    assert_eq!(
        out.len(),
        index_row_bytes(indices.len(), bits),
        "pack_row: out length"
    );
    out.fill(0);
    let mask = ((1u16 << bits) - 1) as u8;
    let mut bit = 0usize;
    for &ix in indices {
        let v = u16::from(ix & mask) << (bit % 8);
        out[bit / 8] |= v as u8;
        if bit % 8 + usize::from(bits) > 8 {
            out[bit / 8 + 1] |= (v >> 8) as u8;
        }
        bit += usize::from(bits);
    }
}

/// Decodes one packed row: `out[j] = lut[index j]`. Fast twin of
/// [`unpack_lookup_scalar`]: whole bytes for 2, 4 and 8 bits, a 64-bit bit buffer
/// otherwise.
///
/// # Panics
/// If `packed` is shorter than [`index_row_bytes`]`(out.len(), bits)`, `lut` has
/// fewer than `2^bits` entries, or `bits` is not in `1..=8`.
pub fn unpack_lookup(packed: &[u8], bits: u8, lut: &[f32], out: &mut [f32]) {
    check(packed, bits, lut, out);
    let lut = &lut[..1 << bits];
    unpack_map(packed, bits, out, |ix| lut[usize::from(ix)]);
}

/// Scalar twin of [`unpack_lookup`]: reads each index bit by bit.
///
/// # Panics
/// As [`unpack_lookup`].
pub fn unpack_lookup_scalar(packed: &[u8], bits: u8, lut: &[f32], out: &mut [f32]) {
    check(packed, bits, lut, out);
    let b = usize::from(bits);
    for (j, o) in out.iter_mut().enumerate() {
        let mut ix = 0usize;
        for t in 0..b {
            let bit = j * b + t;
            ix |= usize::from((packed[bit / 8] >> (bit % 8)) & 1) << t;
        }
        *o = lut[ix];
    }
}

/// The indices themselves of a row packed by [`pack_row`] (one per `out` entry).
/// Fast twin of [`unpack_indices_scalar`]: whole bytes for 2, 4 and 8 bits (at 2
/// bits a table gives each byte's four indices as one word), a 64-bit bit buffer
/// otherwise.
///
/// # Panics
/// If `bits` is outside 1..=8 or `packed` is shorter than
/// [`index_row_bytes`]`(out.len(), bits)`.
pub fn unpack_indices(packed: &[u8], bits: u8, out: &mut [u8]) {
    check_indices(packed, bits, out);
    if bits == 2 {
        // A packed byte's four indices as one 32-bit word (a nested palette's base).
        let whole = out.len() / 4;
        for (o, &b) in out.chunks_exact_mut(4).zip(packed) {
            o.copy_from_slice(&QUADS[usize::from(b)].to_le_bytes()[..4]);
        }
        unpack_map(&packed[whole..], bits, &mut out[whole * 4..], |ix| ix);
        return;
    }
    unpack_map(packed, bits, out, |ix| ix);
}

/// Byte `t` of `QUADS[b]` is the 2-bit index `t` of packed byte `b` (LSB first).
const QUADS: [u64; 256] = byte_fields(2);

/// For every byte `b`, its `8 / bits` fields of `bits` bits (LSB first) as the
/// bytes of one word, field `t` in byte `t`: `byte_fields(1)` spreads a bit plane
/// byte over eight index bytes, `byte_fields(2)` a packed 2-bit byte over four.
pub(crate) const fn byte_fields(bits: u32) -> [u64; 256] {
    let mask = (1u64 << bits) - 1;
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k * bits < 8 {
            t[b] |= ((b as u64 >> (bits * k)) & mask) << (8 * k);
            k += 1;
        }
        b += 1;
    }
    t
}

/// `out[j] = map(index j)` over a checked row: whole bytes for 2, 4 and 8 bits, a
/// 64-bit bit buffer otherwise. Inlined into [`unpack_lookup`] and
/// [`unpack_indices`] with their maps.
#[inline(always)]
fn unpack_map<T>(packed: &[u8], bits: u8, out: &mut [T], map: impl Fn(u8) -> T) {
    let n = out.len();
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(packed) {
                *o = map(b);
            }
        }
        4 => {
            let mut pairs = out.chunks_exact_mut(2);
            for (o, &b) in (&mut pairs).zip(packed) {
                o[0] = map(b & 0xF);
                o[1] = map(b >> 4);
            }
            if let Some(o) = pairs.into_remainder().first_mut() {
                *o = map(packed[n / 2] & 0xF);
            }
        }
        2 => {
            let mut quads = out.chunks_exact_mut(4);
            for (o, &b) in (&mut quads).zip(packed) {
                o[0] = map(b & 3);
                o[1] = map((b >> 2) & 3);
                o[2] = map((b >> 4) & 3);
                o[3] = map(b >> 6);
            }
            let tail = quads.into_remainder();
            if !tail.is_empty() {
                let b = packed[n / 4];
                for (s, x) in tail.iter_mut().enumerate() {
                    *x = map((b >> (2 * s)) & 3);
                }
            }
        }
        _ => {
            let mask = (1u64 << bits) - 1;
            let mut acc = 0u64;
            let mut have = 0u32;
            let mut bytes = packed.iter();
            for o in out.iter_mut() {
                while have < u32::from(bits) {
                    // The callers' checks guaranteed enough bytes for every index.
                    let b = bytes.next().copied().unwrap_or(0);
                    acc |= u64::from(b) << have;
                    have += 8;
                }
                *o = map((acc & mask) as u8);
                acc >>= bits;
                have -= u32::from(bits);
            }
        }
    }
}

/// Scalar twin of [`unpack_indices`]: reads each index bit by bit.
///
/// # Panics
/// As [`unpack_indices`].
pub fn unpack_indices_scalar(packed: &[u8], bits: u8, out: &mut [u8]) {
    check_indices(packed, bits, out);
    let b = usize::from(bits);
    for (j, o) in out.iter_mut().enumerate() {
        let mut ix = 0u8;
        for t in 0..b {
            let bit = j * b + t;
            ix |= ((packed[bit / 8] >> (bit % 8)) & 1) << t;
        }
        *o = ix;
    }
}

fn check_indices(packed: &[u8], bits: u8, out: &[u8]) {
    assert!((1..=8).contains(&bits), "unpack_indices: bits {bits}");
    assert!(
        packed.len() >= index_row_bytes(out.len(), bits),
        "unpack_indices: packed too short"
    );
}

fn check(packed: &[u8], bits: u8, lut: &[f32], out: &[f32]) {
    assert!((1..=8).contains(&bits), "unpack_lookup: bits {bits}");
    assert!(
        packed.len() >= index_row_bytes(out.len(), bits),
        "unpack_lookup: packed too short"
    );
    assert!(lut.len() >= 1 << bits, "unpack_lookup: lut too short");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_then_unpack_fast_and_scalar_agree(
            bits in 1u8..=8,
            len in prop::sample::select(vec![1usize, 7, 65, 129, 383]),
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let idx: Vec<u8> = (0..len).map(|_| rng.random_range(0..(1u16 << bits)) as u8).collect();
            let lut: Vec<f32> = (0..(1usize << bits)).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut packed = vec![0u8; index_row_bytes(len, bits)];
            pack_row(&idx, bits, &mut packed);
            let mut fast = vec![0f32; len];
            let mut slow = vec![1f32; len];
            unpack_lookup(&packed, bits, &lut, &mut fast);
            unpack_lookup_scalar(&packed, bits, &lut, &mut slow);
            prop_assert_eq!(&fast, &slow);
            let want: Vec<f32> = idx.iter().map(|&i| lut[usize::from(i)]).collect();
            prop_assert_eq!(fast, want);
            let mut back = vec![0u8; len];
            unpack_indices(&packed, bits, &mut back);
            let mut back_scalar = vec![0xFFu8; len];
            unpack_indices_scalar(&packed, bits, &mut back_scalar);
            prop_assert_eq!(&back, &back_scalar);
            prop_assert_eq!(back, idx);
        }
    }

    #[test]
    fn bit_order_is_lsb_first_within_a_row() {
        let mut out = [0u8; 2];
        pack_row(&[1, 2, 3, 0, 5], 3, &mut out);
        // 001 | 010 | 011 | 000 | 101 from the least significant bit: byte 0 holds
        // 11 (low bits of 3), 010, 001; byte 1 holds 0, 101, 000, 0 (high to low).
        assert_eq!(out, [0b1101_0001, 0b0101_0000]);
    }
}
