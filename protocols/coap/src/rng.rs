//! Seedable pseudo-random source (SplitMix64).
//!
//! The endpoint needs randomness only for the initial message ID and the
//! retransmission jitter of RFC 7252 §4.2; neither is security relevant, so
//! a tiny deterministic generator seeded from [`crate::Config::seed`] keeps
//! tests reproducible without pulling in `rand`.

/// SplitMix64 state.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    /// The 64-bit counter; SplitMix64 is a bijective mix of it, so every seed
    /// (including 0) yields a full-period sequence.
    state: u64,
}

impl Rng {
    /// Creates a generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Returns the next 64 pseudo-random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a uniform value in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // 53 random bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
