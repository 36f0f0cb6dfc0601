//! A fixed-length bitset: tombstones, filter results, visited marks.

/// A fixed-length set of bits over `0..len`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitset {
    words: Vec<u64>,
    len: usize,
}

impl Bitset {
    /// `len` bits, all clear.
    pub fn new(len: usize) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Makes this `len` bits, all clear, keeping the allocation (a reused scratch set).
    pub fn reset(&mut self, len: usize) {
        self.words.clear();
        self.words.resize(len.div_ceil(64), 0);
        self.len = len;
    }

    /// `len` bits, all set.
    pub fn full(len: usize) -> Self {
        let mut b = Bitset {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        b.clear_tail();
        b
    }

    /// Rebuilds a bitset from its words (as written by [`Bitset::words`]); `None` when
    /// the word count does not fit `len` or bits past `len` are set.
    pub fn from_words(words: Vec<u64>, len: usize) -> Option<Self> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        let b = Bitset { words, len };
        let mut check = b.clone();
        check.clear_tail();
        (check == b).then_some(b)
    }

    fn clear_tail(&mut self) {
        let rem = self.len % 64;
        if rem != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << rem) - 1;
        }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing words, least significant bit first.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether bit `i` is set (false past the end).
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// The bitset whose bit `i` is bit `order[i]` of this one (bits past the end
    /// read as clear), `order.len()` long.
    pub fn permuted(&self, order: &[u32]) -> Bitset {
        let mut out = Bitset::new(order.len());
        for (i, &o) in order.iter().enumerate() {
            if self.get(o as usize) {
                out.set(i);
            }
        }
        out
    }

    /// Sets bit `i`; returns whether it was clear. Ignores `i` past the end.
    #[inline]
    pub fn set(&mut self, i: usize) -> bool {
        match self.words.get_mut(i / 64) {
            Some(w) if i < self.len => {
                let mask = 1u64 << (i % 64);
                let was_clear = *w & mask == 0;
                *w |= mask;
                was_clear
            }
            _ => false,
        }
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// `self &= other` (lengths must match; extra words are ignored).
    pub fn and(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    /// `self |= other`.
    pub fn or(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// `self &= !other`.
    pub fn and_not(&mut self, other: &Bitset) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    /// Indices of the set bits, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and_ops() {
        let mut a = Bitset::new(130);
        assert!(a.set(0) && a.set(129) && a.set(64));
        assert!(!a.set(64));
        assert!(!a.set(130), "past the end is ignored");
        let p = a.permuted(&[129, 1, 0, 64, 5]);
        assert_eq!(p.iter_ones().collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(a.count_ones(), 3);
        assert_eq!(a.iter_ones().collect::<Vec<_>>(), vec![0, 64, 129]);
        let full = Bitset::full(130);
        assert_eq!(full.count_ones(), 130);
        let mut b = full.clone();
        b.and_not(&a);
        assert_eq!(b.count_ones(), 127);
        b.or(&a);
        assert_eq!(b, full);
        b.and(&a);
        assert_eq!(b, a);
        assert!(Bitset::from_words(full.words().to_vec(), 130).is_some());
        assert!(Bitset::from_words(vec![u64::MAX; 3], 130).is_none());
        assert!(Bitset::from_words(vec![0; 2], 130).is_none());
    }
}
