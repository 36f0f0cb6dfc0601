//! Scoring kernels over packed transform codes.
//!
//! A prepared query turns every component into either weights on its code
//! (`u c + v c^2`, uniform quantizers: the whole score is a constant plus these) or a
//! table indexed by its code (k-means levels). When `v` is zero (dot and cosine)
//! the score is linear in the code's bits and [`ByteTables`] score it with one
//! lookup per code byte. The other kernels evaluate their sums over a code laid
//! out as in [`Layout`]: each aligned block by a loop whose width is a
//! compile-time constant (a group of 8 codes is one `u64` of `W` bytes, shifted by
//! constants), then the short tail slot by slot.
//!
//! Each fast kernel has a scalar twin reading codes bit by bit
//! ([`Layout::read_scalar`]) and summing left to right; property tests compare them.
//! Results differ only by float summation order.
//!
//! The fast kernels are plain generic Rust written so the compiler vectorises them.
//! They are compiled twice: for the target's baseline and with AVX2 + FMA enabled,
//! picked at run time by the crate's dispatcher ([`crate::kernels::cpu_level`]);
//! AVX2's variable shifts and 8-lane FMAs are what makes the unpacking vectorise.

use super::layout::Layout;

/// Runs `$generic(args)` compiled for AVX2 + FMA when the CPU has them, else as
/// compiled for the baseline.
macro_rules! dispatch {
    ($generic:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) -> $ret {
                $generic($($arg),*)
            }
            if crate::kernels::cpu_level().avx2_fma_f16c {
                // SAFETY: AVX2 and FMA were detected on this CPU at run time, the only
                // requirement of a function compiled with them enabled.
                return unsafe { avx2($($arg),*) };
            }
        }
        $generic($($arg),*)
    }};
}

/// Eight `W`-bit codes from a group of `W` bytes (code `i` at bits `i W ..`).
///
/// Written for 8 lanes of 32 bits: codes 0-3 lie in the low `4 W <= 32` bits and
/// codes 4-7 in the next `4 W`, so every lane is one variable shift and a mask of a
/// broadcast `u32` (`vpsrlvd` under AVX2) and the conversion is a signed one
/// (`vcvtdq2ps`; codes are below 256).
#[inline(always)]
fn unpack_group<const W: usize>(group: &[u8]) -> [i32; 8] {
    let mut buf = [0u8; 8];
    buf[..W].copy_from_slice(&group[..W]);
    let word = u64::from_le_bytes(buf);
    let halves = [word as u32, (word >> (4 * W)) as u32];
    let mask = (1u32 << W) - 1;
    std::array::from_fn(|i| ((halves[i / 4] >> ((i % 4) * W)) & mask) as i32)
}

#[inline(always)]
fn quadratic_w<const W: usize>(bytes: &[u8], u: &[f32], v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for ((g, ug), vg) in bytes
        .chunks_exact(W)
        .zip(u.chunks_exact(8))
        .zip(v.chunks_exact(8))
    {
        let c = unpack_group::<W>(g);
        for i in 0..8 {
            let c = c[i] as f32;
            acc[i] += (ug[i] + vg[i] * c) * c;
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn table_w<const W: usize>(bytes: &[u8], tables: &[f32]) -> f32 {
    let stride = 1usize << W;
    let mut acc = [0f32; 8];
    for (g, tg) in bytes.chunks_exact(W).zip(tables.chunks_exact(8 * stride)) {
        let c = unpack_group::<W>(g);
        for i in 0..8 {
            acc[i] += tg[i * stride + c[i] as usize];
        }
    }
    acc.iter().sum()
}

/// Runs `$f::<W>(args)` for the runtime width `$w` in `1..=8`.
macro_rules! by_width {
    ($w:expr, $f:ident($($arg:expr),*)) => {
        match $w {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            w => panic!("code width {w} not in 1..=8"),
        }
    };
}

/// Code `i` of a block of `width`-bit codes, bit by bit.
fn block_code_scalar(width: u8, bytes: &[u8], i: usize) -> usize {
    let w = usize::from(width);
    (0..w)
        .map(|k| {
            let bit = i * w + k;
            usize::from((bytes[bit / 8] >> (bit % 8)) & 1) << k
        })
        .sum()
}

/// `sum_i u[i] c_i + v[i] c_i^2` over a block. Twin: [`block_quadratic_scalar`].
pub fn block_quadratic(width: u8, bytes: &[u8], u: &[f32], v: &[f32]) -> f32 {
    dispatch!(block_quadratic_generic(width: u8, bytes: &[u8], u: &[f32], v: &[f32]) -> f32)
}

#[inline(always)]
fn block_quadratic_generic(width: u8, bytes: &[u8], u: &[f32], v: &[f32]) -> f32 {
    by_width!(width, quadratic_w(bytes, u, v))
}

/// Scalar twin of [`block_quadratic`].
pub fn block_quadratic_scalar(width: u8, bytes: &[u8], u: &[f32], v: &[f32]) -> f32 {
    u.iter()
        .zip(v)
        .enumerate()
        .map(|(i, (ui, vi))| {
            let c = block_code_scalar(width, bytes, i) as f32;
            ui * c + vi * c * c
        })
        .sum()
}

/// `sum_i tables[i 2^width + c_i]` over a block (one table of `2^width` entries per
/// code). Twin: [`block_table_scalar`].
pub fn block_table(width: u8, bytes: &[u8], tables: &[f32]) -> f32 {
    dispatch!(block_table_generic(width: u8, bytes: &[u8], tables: &[f32]) -> f32)
}

#[inline(always)]
fn block_table_generic(width: u8, bytes: &[u8], tables: &[f32]) -> f32 {
    by_width!(width, table_w(bytes, tables))
}

/// Scalar twin of [`block_table`].
pub fn block_table_scalar(width: u8, bytes: &[u8], tables: &[f32]) -> f32 {
    let stride = 1usize << width;
    (0..tables.len() / stride)
        .map(|i| tables[i * stride + block_code_scalar(width, bytes, i)])
        .sum()
}

/// `sum_t u[t] c_t` over every slot, slot by slot: the reference the byte
/// tables ([`ByteTables`]) of a linear score are tested against.
pub fn linear_score_scalar(layout: &Layout, code: &[u8], u: &[f32]) -> f32 {
    (0..layout.slots())
        .map(|t| u[t] * f32::from(layout.read_scalar(code, t)))
        .sum()
}

/// `sum_t u[t] c_t + v[t] c_t^2` over every slot. Twin: [`quadratic_score_scalar`].
pub fn quadratic_score(layout: &Layout, code: &[u8], u: &[f32], v: &[f32]) -> f32 {
    dispatch!(quadratic_score_generic(layout: &Layout, code: &[u8], u: &[f32], v: &[f32]) -> f32)
}

#[inline(always)]
fn quadratic_score_generic(layout: &Layout, code: &[u8], u: &[f32], v: &[f32]) -> f32 {
    let mut sum = 0.0;
    for b in layout.blocks() {
        let s = b.slots.clone();
        sum += block_quadratic_generic(b.width, b.bytes(code), &u[s.clone()], &v[s]);
    }
    for t in layout.tail() {
        let c = f32::from(layout.read(code, t));
        sum += (u[t] + v[t] * c) * c;
    }
    sum
}

/// Scalar twin of [`quadratic_score`].
pub fn quadratic_score_scalar(layout: &Layout, code: &[u8], u: &[f32], v: &[f32]) -> f32 {
    (0..layout.slots())
        .map(|t| {
            let c = f32::from(layout.read_scalar(code, t));
            u[t] * c + v[t] * c * c
        })
        .sum()
}

/// Where each slot's table starts when slot `t` has `2^widths[t]` entries, plus the
/// total length at the end.
pub fn table_offsets(layout: &Layout) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(layout.slots() + 1);
    let mut at = 0;
    offsets.push(0);
    for &w in layout.widths() {
        at += 1usize << w;
        offsets.push(at);
    }
    offsets
}

/// `sum_t tables[offsets[t] + c_t]` over every slot, with `offsets` from
/// [`table_offsets`]. Twin: [`table_score_scalar`].
pub fn table_score(layout: &Layout, code: &[u8], tables: &[f32], offsets: &[usize]) -> f32 {
    dispatch!(table_score_generic(layout: &Layout, code: &[u8], tables: &[f32], offsets: &[usize]) -> f32)
}

#[inline(always)]
fn table_score_generic(layout: &Layout, code: &[u8], tables: &[f32], offsets: &[usize]) -> f32 {
    let mut sum = 0.0;
    for b in layout.blocks() {
        let t = &tables[offsets[b.slots.start]..offsets[b.slots.end]];
        sum += block_table_generic(b.width, b.bytes(code), t);
    }
    for t in layout.tail() {
        sum += tables[offsets[t] + usize::from(layout.read(code, t))];
    }
    sum
}

/// Scalar twin of [`table_score`].
pub fn table_score_scalar(layout: &Layout, code: &[u8], tables: &[f32], offsets: &[usize]) -> f32 {
    (0..layout.slots())
        .map(|t| tables[offsets[t] + usize::from(layout.read_scalar(code, t))])
        .sum()
}

/// The weight of every bit of a code when the score is `sum_t u[t] c_t`: bit `j`
/// of slot `t` weighs `u[t] 2^j`; padding bits weigh nothing. `8 code_len` long.
pub fn bit_weights(layout: &Layout, u: &[f32]) -> Vec<f32> {
    let mut w = vec![0f32; layout.code_len() * 8];
    for (t, (&first, &width)) in layout.bit_offsets().iter().zip(layout.widths()).enumerate() {
        for j in 0..usize::from(width) {
            w[first as usize + j] = u[t] * (1u32 << j) as f32;
        }
    }
    w
}

/// Per-query tables of a score linear in the code's bits, one per code byte:
/// entry `v` of table `p` is the sum of the weights of the bits set in `v` at
/// byte `p`, stored as `u16` steps above the table's minimum so that all of them
/// (2 bytes x 256 x bytes per code, 48 KiB for a 96-byte code) stay in cache
/// and the sum is integer adds. The score is then one lookup per code byte
/// whatever the components' widths, and off from the exact weighted sum by at
/// most [`ByteTables::max_error`].
#[derive(Debug, Clone)]
pub struct ByteTables {
    tables: Vec<[u16; 256]>,
    /// Sum of the tables' minima.
    offset: f32,
    /// Value of one `u16` step.
    step: f32,
}

impl ByteTables {
    /// The tables of `bit_weights` (weight of bit `i` of the code; the length a
    /// multiple of 8).
    pub fn new(bit_weights: &[f32]) -> ByteTables {
        // Each table's range is known from its weights: the minimum takes every
        // negative weight, the maximum every positive one.
        let bounds: Vec<(f32, f32)> = bit_weights
            .chunks_exact(8)
            .map(|w| {
                let lo: f32 = w.iter().map(|&x| x.min(0.0)).sum();
                let hi: f32 = w.iter().map(|&x| x.max(0.0)).sum();
                (lo, hi)
            })
            .collect();
        let widest = bounds.iter().map(|(lo, hi)| hi - lo).fold(0f32, f32::max);
        let step = widest / f32::from(u16::MAX);
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        let mut tables = vec![[0u16; 256]; bounds.len()];
        for ((table, w), &(lo, _)) in tables
            .iter_mut()
            .zip(bit_weights.chunks_exact(8))
            .zip(&bounds)
        {
            // Entry v is the low nibble's sum plus the high nibble's: two 16-entry
            // tables, then 256 independent adds that vectorise.
            let mut low = [0f32; 16];
            let mut high = [0f32; 16];
            for n in 1..16usize {
                let k = n.trailing_zeros() as usize;
                low[n] = low[n & (n - 1)] + w[k];
                high[n] = high[n & (n - 1)] + w[4 + k];
            }
            for (row, &h) in table.chunks_exact_mut(16).zip(&high) {
                let base = h - lo;
                for (q, &l) in row.iter_mut().zip(&low) {
                    // Rounding keeps each entry within half a step. Adding 2^23
                    // to x in [0, 65535] leaves round(x) in the low mantissa bits:
                    // a float add and a mask that vectorise, where `as` would
                    // saturate lane by lane.
                    let x = ((base + l) * inv).clamp(0.0, 65535.0);
                    *q = (x + 8_388_608.0).to_bits() as u16;
                }
            }
        }
        ByteTables {
            tables,
            offset: bounds.iter().map(|b| b.0).sum(),
            step,
        }
    }

    /// Bytes of code the tables score.
    pub fn code_len(&self) -> usize {
        self.tables.len()
    }

    /// The largest difference from the exact weighted sum: half a step per
    /// table, plus float rounding.
    pub fn max_error(&self) -> f32 {
        self.tables.len() as f32 * self.step * 0.5
    }

    /// `sum_p tables[p][code[p]]`, scaled back. Twin: [`bit_weights_score_scalar`].
    #[inline]
    pub fn score(&self, code: &[u8]) -> f32 {
        debug_assert_eq!(code.len(), self.tables.len());
        // Four independent sums keep four lookups in flight. At most 65,535 x
        // code_len: a u32 holds it for any code below 65,536 bytes.
        let mut acc = [0u32; 4];
        let (code4, code_rest) = code.as_chunks::<4>();
        let (tables4, tables_rest) = self.tables.split_at(code4.len() * 4);
        for (c, t) in code4.iter().zip(tables4.chunks_exact(4)) {
            acc[0] += u32::from(t[0][usize::from(c[0])]);
            acc[1] += u32::from(t[1][usize::from(c[1])]);
            acc[2] += u32::from(t[2][usize::from(c[2])]);
            acc[3] += u32::from(t[3][usize::from(c[3])]);
        }
        for (&c, t) in code_rest.iter().zip(tables_rest) {
            acc[0] += u32::from(t[usize::from(c)]);
        }
        let steps = u64::from(acc[0]) + u64::from(acc[1]) + u64::from(acc[2]) + u64::from(acc[3]);
        self.offset + self.step * steps as f32
    }
}

/// Per-query integer weights of a score linear in the code's bits, for CPUs with
/// AVX-512 VNNI: bit `i` of the code weighs `weights[i]`, written in `planes`
/// base-256 digits, each an `i8` (three planes: `2^16 hi + 2^8 mid + lo`).
/// Sixty-four bits of code become 64 bytes of 0/1 in one masked move, and
/// `vpdpbusd` multiplies them with 64 weights of each plane into 16 `i32` lanes: a
/// 96-byte code with three planes is 12 masks and 36 multiply-adds over 2.3 KiB of
/// weights that stay in L1, and preparing a query is one pass over its bit weights
/// (the byte tables take 256 entries per code byte).
///
/// Weights are steps of `max |w_i|` over the largest value the planes hold
/// (8,355,711 for three, 32,639 for two, 127 for one), or of `sum |w_i| / 2^30` if
/// larger, so that no sum overflows. With three planes the rounding, half a step per
/// bit, is about 2^-24 of the largest weight for codes of a few hundred bytes, below
/// the `u16` byte tables' by two orders of magnitude; one plane (a third of the
/// multiply-adds) rounds each weight to 1/254 of the largest, which is what a
/// graph walk steers by ([`crate::codec::Scorer::coarse`]) before its candidates
/// are scored again.
#[derive(Debug, Clone)]
pub struct MaskedWeights {
    /// The weights in steps, bit by bit.
    weights: Vec<i32>,
    /// The digit planes, `planes` x 64 bytes per 64 bits of code in turn (most
    /// significant first), then `planes` values per bit of the tail.
    digits: Vec<i8>,
    /// Number of digit planes, 1..=3.
    planes: usize,
    /// Value of one step.
    step: f32,
}

/// `weights` (each within [`masked_max`] of `planes`) as `planes` signed digits,
/// `w = sum 256^k d_k`, laid out as [`MaskedWeights::digits`] says.
fn digit_planes(weights: &[i32], planes: usize) -> Vec<i8> {
    // w = sum 256^k d_k with every digit in -128..=127 (rounded digits); the
    // bound on |w| keeps the most significant digit in i8 too. One pass per
    // plane, least significant first, over the whole vector.
    let mut rest = weights.to_vec();
    let mut by_plane = vec![vec![0i8; weights.len()]; planes];
    for plane in by_plane.iter_mut().rev() {
        for (d, r) in plane.iter_mut().zip(rest.iter_mut()) {
            let low = ((*r + 128) & 0xFF) - 128;
            *d = low as i8;
            *r = (*r - low) >> 8;
        }
    }
    // Whole 64-bit words: the planes of each word side by side; then the tail,
    // `planes` values per bit.
    let words = weights.len() / 64;
    let mut digits = Vec::with_capacity(weights.len() * planes);
    for w in 0..words {
        for plane in &by_plane {
            digits.extend_from_slice(&plane[64 * w..64 * w + 64]);
        }
    }
    for i in 64 * words..weights.len() {
        digits.extend(by_plane.iter().map(|plane| plane[i]));
    }
    digits
}

/// Largest weight in steps that `planes` digit planes hold: `127 (256^p - 1) / 255`.
fn masked_max(planes: usize) -> f32 {
    match planes {
        1 => 127.0,
        2 => 32_639.0,
        _ => 8_355_711.0,
    }
}

impl MaskedWeights {
    /// The integer weights of `bit_weights` (weight of bit `i` of the code; the
    /// length a multiple of 8) in three planes: the precise scorer.
    pub fn new(bit_weights: &[f32]) -> MaskedWeights {
        MaskedWeights::with_planes(bit_weights, 3)
    }

    /// The integer weights of `bit_weights` in `planes` digit planes (clamped to
    /// 1..=3): fewer planes, fewer multiply-adds, coarser steps.
    pub fn with_planes(bit_weights: &[f32], planes: usize) -> MaskedWeights {
        let planes = planes.clamp(1, 3);
        let top = masked_max(planes);
        let max = bit_weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        let total: f64 = bit_weights.iter().map(|w| f64::from(w.abs())).sum();
        // No weight above the planes' range, and no sum of them beyond 2^30.
        let step = (max / top).max((total / f64::from(1u32 << 30)) as f32);
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        let weights: Vec<i32> = bit_weights
            .iter()
            .map(|&w| {
                // Rounds half away from zero, as `round` does, without its libm
                // call (the baseline x86-64 target has no rounding instruction).
                let x = (w * inv).clamp(-top, top);
                (x + 0.5f32.copysign(x)) as i32
            })
            .collect();
        let digits = digit_planes(&weights, planes);
        MaskedWeights {
            weights,
            digits,
            planes,
            step,
        }
    }

    /// `with_planes(&bit_weights(layout, u), 1)`, the coarse weights every query
    /// builds, without materialising the bit weights or passing over them three
    /// times: bit `j` of slot `t` weighs `u_t 2^j`, so the largest is
    /// `|u_t| 2^(w_t - 1)` and the sum of all `|u_t| (2^w_t - 1)` (that sum only
    /// guards against overflow; it rounds in another order than the bit-by-bit one).
    pub fn one_plane(layout: &Layout, u: &[f32]) -> MaskedWeights {
        let top = masked_max(1);
        // Four chains each (the maximum is exact in any order; the sum only
        // guards against overflow, see `with_planes`).
        let (mut max, mut total) = ([0f32; 4], [0f64; 4]);
        for (i, (&ut, &width)) in u.iter().zip(layout.widths()).enumerate() {
            if width > 0 {
                max[i % 4] = max[i % 4].max(ut.abs() * (1u32 << (width - 1)) as f32);
                total[i % 4] += f64::from(ut.abs()) * f64::from((1u32 << width) - 1);
            }
        }
        let max = max.into_iter().fold(0f32, f32::max);
        let total: f64 = total.into_iter().sum();
        let step = (max / top).max((total / f64::from(1u32 << 30)) as f32);
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        let mut weights = vec![0i32; layout.code_len() * 8];
        one_plane_bits(layout, u, inv, &mut weights);
        // One plane is the weights themselves (|w| <= 127): what `digit_planes`
        // gives, without its passes.
        let digits = weights.iter().map(|&w| w as i8).collect();
        MaskedWeights {
            weights,
            digits,
            planes: 1,
            step,
        }
    }

    /// Bytes of code the weights score.
    pub fn code_len(&self) -> usize {
        self.weights.len() / 8
    }

    /// The largest difference from the exact weighted sum: half a step per bit,
    /// plus float rounding.
    pub fn max_error(&self) -> f32 {
        self.weights.len() as f32 * self.step * 0.5
    }

    /// The sum of the weights of the set bits, scaled back. Twin: [`masked_sum_scalar`].
    #[inline]
    pub fn score(&self, code: &[u8]) -> f32 {
        self.step * self.sum(code) as f32
    }

    /// The sum in steps.
    #[inline]
    pub fn sum(&self, code: &[u8]) -> i32 {
        assert_eq!(
            self.weights.len(),
            code.len() * 8,
            "masked weights: one per code bit"
        );
        #[cfg(target_arch = "x86_64")]
        if masked_weights_fast() {
            // SAFETY: AVX-512 F, BW and VNNI were detected on this CPU at run time;
            // the lengths were checked above and the digits laid out for `planes`.
            return unsafe {
                match self.planes {
                    1 => masked_sum_vnni::<1>(code, &self.digits),
                    2 => masked_sum_vnni::<2>(code, &self.digits),
                    _ => masked_sum_vnni::<3>(code, &self.digits),
                }
            };
        }
        masked_sum_portable(code, &self.weights)
    }

    /// [`MaskedWeights::score`] of `codes[id * code_len..][..code_len]` for each
    /// `id` of `ids`, into `out` (as long as `ids`). One plane on AVX-512 VNNI
    /// scores four codes at a time, sharing each weight load and keeping eight
    /// independent chains of multiply-adds. Panics if a code lies outside `codes`.
    pub fn score_gather(&self, codes: &[u8], ids: &[u32], out: &mut [f32]) {
        assert_eq!(ids.len(), out.len(), "masked weights: one output per id");
        let len = self.code_len();
        self.score_each(|i| &codes[ids[i] as usize * len..][..len], out);
    }

    /// [`MaskedWeights::score`] of the first `out.len()` consecutive codes of
    /// `codes`, as [`MaskedWeights::score_gather`] scores them (a flat scan).
    /// Panics if `codes` holds fewer.
    pub fn score_run(&self, codes: &[u8], out: &mut [f32]) {
        let len = self.code_len();
        self.score_each(|i| &codes[i * len..][..len], out);
    }

    /// Scores `code(i)` into `out[i]` for every `i`, four at a time where the
    /// kernel allows.
    #[inline]
    fn score_each<'c>(&self, code: impl Fn(usize) -> &'c [u8], out: &mut [f32]) {
        let mut i = 0;
        #[cfg(target_arch = "x86_64")]
        if self.planes == 1 && masked_weights_fast() && self.code_len() >= 8 {
            while i + 4 <= out.len() {
                let four = [code(i), code(i + 1), code(i + 2), code(i + 3)];
                // SAFETY: AVX-512 F, BW and VNNI were detected at run time; each
                // code is `code_len` bytes (the callers slice them so) and the
                // digits are one plane of 8 code_len bytes.
                let sums = unsafe { masked_sum4_vnni(four, &self.digits) };
                for (o, s) in out[i..i + 4].iter_mut().zip(sums) {
                    *o = self.step * s as f32;
                }
                i += 4;
            }
        }
        for (j, o) in out.iter_mut().enumerate().skip(i) {
            *o = self.score(code(j));
        }
    }

    /// The weights in steps, bit by bit.
    pub fn weights(&self) -> &[i32] {
        &self.weights
    }
}

/// Every bit's one-plane weight: bit `j` of slot `t` is `(u_t inv) 2^j` (equal to
/// `(u_t 2^j) inv`, as [`MaskedWeights::with_planes`] rounds it: scaling by a power
/// of two is exact) clamped to +-127 and rounded half away from zero, into
/// `weights[first_t + j]`. Twin: [`one_plane_bits_scalar`].
pub fn one_plane_bits(layout: &Layout, u: &[f32], inv: f32, weights: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if masked_weights_fast()
        && inv.is_finite()
        && crate::kernels::all_finite(u)
        && weights.len() >= layout.code_len() * 8
    {
        debug_assert!(layout.widths().iter().all(|&w| w <= 8));
        // SAFETY: AVX-512 F was detected (VNNI implies it). `Layout::new` gives
        // every slot a width of 1..=MAX_BITS (8) bits within its `code_len()`
        // bytes, and `weights` holds 8 of them per byte, as checked just above.
        unsafe { one_plane_bits_avx512(layout, u, inv, weights) };
        return;
    }
    one_plane_bits_scalar(layout, u, inv, weights);
}

/// The twin of [`one_plane_bits`]: bit by bit.
pub fn one_plane_bits_scalar(layout: &Layout, u: &[f32], inv: f32, weights: &mut [i32]) {
    let top = masked_max(1);
    for ((&ut, &first), &width) in u.iter().zip(layout.bit_offsets()).zip(layout.widths()) {
        for (j, w) in weights[first as usize..][..usize::from(width)]
            .iter_mut()
            .enumerate()
        {
            let x = (ut * inv * (1u32 << j) as f32).clamp(-top, top);
            *w = (x + 0.5f32.copysign(x)) as i32;
        }
    }
}

/// A slot's (up to) eight bits in one 16-lane pass, stored under a mask.
///
/// # Safety
/// The CPU must support AVX-512 F; every `u` finite; every width at most 8 and
/// every slot's bits within `weights`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn one_plane_bits_avx512(layout: &Layout, u: &[f32], inv: f32, weights: &mut [i32]) {
    use std::arch::x86_64::*;
    let powers = _mm512_setr_ps(
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    );
    let top = masked_max(1);
    let (hi, lo) = (_mm512_set1_ps(top), _mm512_set1_ps(-top));
    let sign = _mm512_set1_epi32(i32::MIN);
    let half = _mm512_castps_si512(_mm512_set1_ps(0.5));
    let out = weights.as_mut_ptr();
    for ((&ut, &first), &width) in u.iter().zip(layout.bit_offsets()).zip(layout.widths()) {
        let x = _mm512_mul_ps(_mm512_set1_ps(ut * inv), powers);
        let x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        // 0.5 with the sign of x, added, then truncated: half away from zero.
        let h = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(x), sign), half);
        let r = _mm512_cvttps_epi32(_mm512_add_ps(x, _mm512_castsi512_ps(h)));
        let mask: __mmask16 = (1u16 << width) - 1;
        // SAFETY: the caller keeps first + width <= weights.len(); the mask
        // writes lanes 0..width only.
        unsafe { _mm512_mask_storeu_epi32(out.add(first as usize).cast(), mask, r) };
    }
}

/// Whether this CPU runs [`MaskedWeights`] fast (AVX-512 F, BW and VNNI); without
/// it the byte tables are faster than expanding bits.
pub fn masked_weights_fast() -> bool {
    crate::kernels::cpu_level().avx512_vnni
}

/// `sum weights[i]` over the set bits `i` of `code` (bit `i` is bit `i % 8` of byte
/// `i / 8`), bit by bit: what runs without AVX-512.
pub fn masked_sum_portable(code: &[u8], weights: &[i32]) -> i32 {
    let mut sum = 0i32;
    for (&byte, w) in code.iter().zip(weights.chunks_exact(8)) {
        let mut bits = byte;
        while bits != 0 {
            sum = sum.wrapping_add(w[bits.trailing_zeros() as usize]);
            bits &= bits - 1;
        }
    }
    sum
}

/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, `1 <= P <= 3`, and
/// `digits.len() == 8 P code.len()` laid out as [`MaskedWeights::with_planes`]
/// writes them for `P` planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn masked_sum_vnni<const P: usize>(code: &[u8], digits: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let (cp, pp) = (code.as_ptr(), digits.as_ptr());
    let ones = _mm512_set1_epi8(1);
    type Acc = [__m512i; 3];
    // 64 bits of code: their 0/1 bytes times the word's planes.
    let step = |i: usize, mut acc: Acc| -> Acc {
        // SAFETY: the callers keep 8 i + 8 <= code.len(), so 64 P (i + 1) <=
        // digits.len().
        unsafe {
            let mask = cp.add(8 * i).cast::<u64>().read_unaligned();
            let bits = _mm512_maskz_mov_epi8(mask, ones);
            let at = pp.add(64 * P * i);
            for (p, a) in acc.iter_mut().enumerate().take(P) {
                *a = _mm512_dpbusd_epi32(*a, bits, _mm512_loadu_si512(at.add(64 * p).cast()));
            }
            acc
        }
    };
    let (a, b) = two_chains(code.len() / 8, [_mm512_setzero_si512(); 3], step);
    // Each plane's sum is at most 127 x 8 code.len() in size, far inside i32.
    let mut sum = 0i32;
    for p in 0..P {
        let plane = _mm512_reduce_add_epi32(_mm512_add_epi32(a[p], b[p]));
        sum = sum.wrapping_shl(8).wrapping_add(plane);
    }
    sum.wrapping_add(masked_tail_sum::<P>(code, digits))
}

/// `step` over words `0..words` in two independent chains of accumulators, the
/// even words into the first and the odd ones into the second (a last odd word
/// into the first): the masked kernels' driver. Inlined, so each kernel's
/// accumulators stay in registers.
#[inline(always)]
fn two_chains<A: Copy>(words: usize, zero: A, step: impl Fn(usize, A) -> A) -> (A, A) {
    let (mut a, mut b) = (zero, zero);
    let mut i = 0;
    while i + 2 <= words {
        a = step(i, a);
        b = step(i + 1, b);
        i += 2;
    }
    if i < words {
        a = step(i, a);
    }
    (a, b)
}

/// The sum of the weights of `code`'s set bits past its last whole 64-bit word
/// (stored after the words' planes, `P` digits per bit): the masked kernels' tail.
fn masked_tail_sum<const P: usize>(code: &[u8], digits: &[i8]) -> i32 {
    let words = code.len() / 8;
    let mut sum = 0i32;
    for (j, &byte) in code.iter().enumerate().skip(8 * words) {
        let mut bits = byte;
        while bits != 0 {
            let bit = 8 * j + bits.trailing_zeros() as usize - 64 * words;
            let d = &digits[64 * P * words + P * bit..][..P];
            let w = d.iter().fold(0i32, |w, &x| (w << 8) + i32::from(x));
            sum = sum.wrapping_add(w);
            bits &= bits - 1;
        }
    }
    sum
}

/// One-plane sums of four codes at once: each word's weights are loaded once for
/// all four, and every code keeps two chains of multiply-adds.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; every code is `n` bytes long,
/// `8 <= n`, and `digits.len() == 8 n` laid out as [`MaskedWeights::with_planes`]
/// writes one plane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn masked_sum4_vnni(codes: [&[u8]; 4], digits: &[i8]) -> [i32; 4] {
    use std::arch::x86_64::*;
    let n = codes[0].len();
    let words = n / 8;
    let pp = digits.as_ptr();
    let ones = _mm512_set1_epi8(1);
    let zero = _mm512_setzero_si512();
    let ptrs = codes.map(<[u8]>::as_ptr);
    // One word into one chain per code (indexed with constants only, so the
    // chains stay in registers).
    let step = |i: usize, acc: [__m512i; 4]| -> [__m512i; 4] {
        // SAFETY: the callers keep 8 i + 8 <= n for every code, so 64 i + 64 <=
        // digits.len().
        unsafe {
            let w = _mm512_loadu_si512(pp.add(64 * i).cast());
            let bits = |c: usize| {
                let mask = ptrs[c].add(8 * i).cast::<u64>().read_unaligned();
                _mm512_maskz_mov_epi8(mask, ones)
            };
            [
                _mm512_dpbusd_epi32(acc[0], bits(0), w),
                _mm512_dpbusd_epi32(acc[1], bits(1), w),
                _mm512_dpbusd_epi32(acc[2], bits(2), w),
                _mm512_dpbusd_epi32(acc[3], bits(3), w),
            ]
        }
    };
    let (a, b) = two_chains(words, [zero; 4], step);
    let mut out = [0i32; 4];
    for (k, (o, c)) in out.iter_mut().zip(codes).enumerate() {
        *o = _mm512_reduce_add_epi32(_mm512_add_epi32(a[k], b[k]))
            .wrapping_add(masked_tail_sum::<1>(c, digits));
    }
    out
}

/// Scalar twin of [`MaskedWeights::sum`]: every bit in order, in `i64`.
pub fn masked_sum_scalar(code: &[u8], weights: &[i32]) -> i64 {
    (0..code.len() * 8)
        .filter(|&i| (code[i / 8] >> (i % 8)) & 1 == 1)
        .map(|i| i64::from(weights[i]))
        .sum()
}

/// Scalar twin of [`ByteTables::score`] over the tables' source: each set bit of
/// `code` adds its weight.
pub fn bit_weights_score_scalar(code: &[u8], bit_weights: &[f32]) -> f32 {
    (0..code.len() * 8)
        .filter(|&i| (code[i / 8] >> (i % 8)) & 1 == 1)
        .map(|i| bit_weights[i])
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f32, b: f32, scale: f32) -> bool {
        (a - b).abs() <= 1e-4 * scale.max(1.0)
    }

    fn abs_sum(x: &[f32]) -> f32 {
        x.iter().map(|v| v.abs()).sum::<f32>() * 256.0
    }

    proptest! {
        #[test]
        fn one_plane_from_slots_is_with_planes_of_the_bit_weights(
            slots in proptest::collection::vec((1u8..=8, -10f32..10.0), 1..40)
        ) {
            let widths: Vec<u8> = slots.iter().map(|s| s.0).collect();
            let layout = Layout::new(&widths);
            // Slot order is the layout's; the slot weights follow it.
            let u: Vec<f32> = layout
                .order()
                .iter()
                .map(|&j| slots[j as usize].1)
                .collect();
            let fused = MaskedWeights::one_plane(&layout, &u);
            let general = MaskedWeights::with_planes(&bit_weights(&layout, &u), 1);
            prop_assert_eq!(fused.step, general.step);
            prop_assert_eq!(&fused.weights, &general.weights);
            prop_assert_eq!(&fused.digits, &general.digits);
            prop_assert_eq!(fused.planes, general.planes);
        }
    }

    proptest! {
        #[test]
        fn one_plane_bits_match_twin(
            slots in proptest::collection::vec((1u8..=8, -10f32..10.0), 1..40),
            inv in prop_oneof![Just(0f32), 0.01f32..1e3],
        ) {
            let widths: Vec<u8> = slots.iter().map(|s| s.0).collect();
            let layout = Layout::new(&widths);
            let u: Vec<f32> = slots.iter().map(|s| s.1).collect();
            let mut fast = vec![i32::MAX; layout.code_len() * 8];
            let mut twin = fast.clone();
            one_plane_bits(&layout, &u, inv, &mut fast);
            one_plane_bits_scalar(&layout, &u, inv, &mut twin);
            prop_assert_eq!(fast, twin);
        }
    }

    #[test]
    fn one_plane_bits_with_a_non_finite_weight_are_the_twins() {
        let layout = Layout::new(&[3, 8, 1, 5, 2]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let u = [0.5, bad, -1.25, 3.0, -0.01];
            let mut fast = vec![7i32; layout.code_len() * 8];
            let mut twin = fast.clone();
            one_plane_bits(&layout, &u, 20.0, &mut fast);
            one_plane_bits_scalar(&layout, &u, 20.0, &mut twin);
            assert_eq!(fast, twin, "weight {bad}");
        }
    }

    #[test]
    fn one_plane_digits_are_the_general_decomposition() {
        let bit_weights: Vec<f32> = (0..8 * 97)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let one = MaskedWeights::with_planes(&bit_weights, 1);
        // What `one_plane` writes instead of running `digit_planes`.
        let direct: Vec<i8> = one.weights.iter().map(|&w| w as i8).collect();
        assert_eq!(one.digits, direct);
        assert!(one.weights.iter().any(|&w| w.abs() == 127));
    }

    #[test]
    fn masked_weights_cannot_overflow() {
        // The largest sums: every bit set, weights all of one sign.
        for sign in [1.0f32, -1.0] {
            let weights: Vec<f32> = (0..8 * 97).map(|i| sign * (1 + i % 7) as f32).collect();
            let code = vec![0xFFu8; 97];
            let exact: f32 = weights.iter().sum();
            for planes in 1..=3 {
                let m = MaskedWeights::with_planes(&weights, planes);
                assert_eq!(
                    i64::from(m.sum(&code)),
                    masked_sum_scalar(&code, m.weights())
                );
                assert!((m.score(&code) - exact).abs() <= m.max_error() + 1e-5 * exact.abs());
            }
        }
    }

    proptest! {
        #[test]
        fn block_kernels_match_scalar_twins(
            width in 1u8..=8,
            groups in prop::sample::select(vec![1usize, 7, 8, 9, 17, 65]),
            seed in any::<u64>(),
        ) {
            let n = groups * 8;
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let bytes: Vec<u8> = (0..groups * usize::from(width)).map(|_| next() as u8).collect();
            let u: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let v: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let tables: Vec<f32> = (0..n << width).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let lin = abs_sum(&u);
            let quad = lin + abs_sum(&v) * 256.0;
            prop_assert!(close(
                block_quadratic(width, &bytes, &u, &v),
                block_quadratic_scalar(width, &bytes, &u, &v),
                quad
            ));
            prop_assert!(close(block_table(width, &bytes, &tables), block_table_scalar(width, &bytes, &tables), n as f32));
        }

        #[test]
        fn full_code_kernels_match_scalar_twins(
            len in prop::sample::select(vec![1usize, 7, 65, 129, 383]),
            seed in any::<u64>(),
        ) {
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            // Skewed towards a few widths so that aligned blocks form.
            let widths: Vec<u8> = (0..len).map(|_| [0u8, 1, 2, 2, 3, 4, 4, 5, 6, 7, 8, 8][(next() % 12) as usize]).collect();
            let layout = Layout::new(&widths);
            let code: Vec<u8> = (0..layout.code_len()).map(|_| next() as u8).collect();
            let n = layout.slots();
            let u: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let v: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let offsets = table_offsets(&layout);
            let tables: Vec<f32> = (0..offsets[n]).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let lin = abs_sum(&u);
            let quad = lin + abs_sum(&v) * 256.0;
            prop_assert!(close(
                quadratic_score(&layout, &code, &u, &v),
                quadratic_score_scalar(&layout, &code, &u, &v),
                quad
            ));
            prop_assert!(close(
                table_score(&layout, &code, &tables, &offsets),
                table_score_scalar(&layout, &code, &tables, &offsets),
                n as f32
            ));
            // The byte tables of a linear score: against their bit-by-bit twin,
            // and against the slot-by-slot linear score they fold.
            let weights = bit_weights(&layout, &u);
            let tables = ByteTables::new(&weights);
            let fast = tables.score(&code);
            let tol = tables.max_error() + 1e-4 * lin.max(1.0);
            let exact = bit_weights_score_scalar(&code, &weights);
            prop_assert!((fast - exact).abs() <= tol, "{} vs {} (tolerance {})", fast, exact, tol);
            prop_assert!(close(exact, linear_score_scalar(&layout, &code, &u), lin));
            // The masked integer weights: exact against their twin, within their
            // bound of the float sum.
            // Every plane count (one plane is the graph walk's coarse scorer).
            for planes in 1..=3 {
                let masked = MaskedWeights::with_planes(&weights, planes);
                // Gathered scores (four at a time with one plane) equal one by one,
                // in any order and with repeats.
                let copies: Vec<u8> = (0..5).flat_map(|_| code.iter().copied()).collect();
                let ids = [3u32, 0, 4, 4, 1, 2, 0];
                let mut gathered = [0f32; 7];
                masked.score_gather(&copies, &ids, &mut gathered);
                prop_assert!(gathered.iter().all(|&g| g == masked.score(&code)));
                let mut run = [0f32; 5];
                masked.score_run(&copies, &mut run);
                prop_assert!(run.iter().all(|&g| g == masked.score(&code)));
                prop_assert_eq!(i64::from(masked.sum(&code)), masked_sum_scalar(&code, masked.weights()));
                prop_assert_eq!(
                    i64::from(masked_sum_portable(&code, masked.weights())),
                    masked_sum_scalar(&code, masked.weights())
                );
                let fast = masked.score(&code);
                let tol = masked.max_error() + 1e-4 * lin.max(1.0);
                prop_assert!((fast - exact).abs() <= tol, "{} planes: {} vs {} (tolerance {})", planes, fast, exact, tol);
            }
        }
    }
}
