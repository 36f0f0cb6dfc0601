//! Cache prefetch hints for the graph walk.
//!
//! An HNSW search jumps between codes scattered over a memory map: profiling the
//! store's search on real MiniLM data showed most of the scoring kernel's time spent
//! waiting for the first load of each code. Asking the CPU to fetch a node's
//! neighbours before scoring any of them overlaps those misses (hnswlib and faiss do
//! the same).

/// Bytes per cache line on the CPUs we target.
const LINE: usize = 64;

/// Hints the CPU to bring every cache line of `bytes` into the L1 cache. A hint
/// only: it never faults, never changes a result, and is a no-op off x86-64.
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T0 }>(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// [`prefetch`] into the L2 cache only: for bytes read later than the next few
/// hundred cycles (a rescore tier's rows while the walk still runs), which in L1
/// would push out what the walk reads now.
#[inline]
pub fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }>(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_lines<const HINT: i32>(bytes: &[u8]) {
    use std::arch::x86_64::_mm_prefetch;
    let start = bytes.as_ptr() as usize;
    let end = start + bytes.len();
    let mut line = start & !(LINE - 1);
    while line < end {
        // SAFETY: `prefetch` (SSE, part of the x86-64 baseline) is a hint that
        // never faults or reads into the program's state; the addresses lie
        // within `bytes` (the first line may start before it, the same line).
        unsafe { _mm_prefetch::<HINT>(line as *const i8) };
        line += LINE;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetch_accepts_any_slice() {
        let v = vec![7u8; 1000];
        for (a, b) in [(0, 0), (0, 1), (3, 67), (63, 65), (1, 1000), (999, 1000)] {
            super::prefetch(&v[a..b]);
            super::prefetch_l2(&v[a..b]);
        }
        super::prefetch(&[]);
        super::prefetch_l2(&[]);
        assert!(v.iter().all(|&x| x == 7));
    }
}
