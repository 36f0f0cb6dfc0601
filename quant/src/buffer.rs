//! Output buffers for rebuilt tensors.
//!
//! A budget's rebuilt weights are f32 (or f16/bf16, [`crate::dest`]), two to
//! sixteen times the bytes of the file prefix they come from, so with 4 KiB pages faulting them in (one fault and one page
//! clear per 4 KiB) costs about as much as decoding them. On Linux, buffers of
//! [`HUGE_MIN`] bytes or more are advised to use transparent huge pages
//! (`MADV_HUGEPAGE`, what numpy does for large arrays), 512 times fewer faults where
//! THP is in `madvise` or `always` mode; elsewhere the advice does nothing.

/// Buffers at least this large are advised to use huge pages.
const HUGE_MIN: usize = 2 << 20;

/// `n` zeros, advised to be backed by huge pages when large (see the module doc).
pub(crate) fn zeroed_f32(n: usize) -> Vec<f32> {
    zeroed(n)
}

/// `n` zeros of any plain element type, advised as [`zeroed_f32`]. The memory comes
/// from a zeroed allocation (fresh pages the kernel clears on first touch, by the
/// thread that writes them), never from a pass writing zeros.
pub(crate) fn zeroed<T: bytemuck::Zeroable>(n: usize) -> Vec<T> {
    let v = bytemuck::zeroed_vec(n);
    advise_huge(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge<T>(v: &[T]) {
    const PAGE: usize = 4096;
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE_MIN {
        return;
    }
    let start = v.as_ptr() as usize;
    let (lo, hi) = (start.next_multiple_of(PAGE), (start + bytes) & !(PAGE - 1));
    if hi <= lo {
        return;
    }
    // SAFETY: [lo, hi) lies inside `v`'s allocation, page aligned. MADV_HUGEPAGE only
    // changes how the kernel backs those pages on their next fault: it neither reads
    // nor writes them, and their contents stay as they are. A failure (THP disabled,
    // an old kernel) leaves 4 KiB pages, so the result is ignored.
    unsafe {
        libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge<T>(_: &[T]) {}

#[cfg(test)]
mod tests {
    #[test]
    fn large_and_small_buffers_are_zeroed_and_writable() {
        for n in [0usize, 1, 1023, (super::HUGE_MIN / 4) + 77] {
            let mut v = super::zeroed_f32(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0));
            v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
            let h = super::zeroed::<half::f16>(n);
            assert!(h.iter().all(|x| x.to_bits() == 0));
        }
    }
}
