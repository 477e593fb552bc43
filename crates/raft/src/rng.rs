//! [`SplitMix64`]: the project's small deterministic generator. The same seed gives the same
//! sequence on every platform and every version, which is what election timeouts, randomized
//! tests (replayed from their seed) and benchmark key choices need. Not for anything secret.

/// A SplitMix64 generator (Steele, Lea and Flood, 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[0, n)` (slightly biased for an `n` that is not a power of two).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0): empty range");
        self.next_u64() % n
    }

    /// A value in `[low, high)`.
    ///
    /// # Panics
    /// If the range is empty.
    pub fn in_range(&mut self, low: u32, high: u32) -> u32 {
        assert!(low < high, "empty range [{low}, {high})");
        low + self.below(u64::from(high - low)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn the_sequence_is_the_reference_one() {
        // The first outputs of SplitMix64 seeded with 0 (the published reference values).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
