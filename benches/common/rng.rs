//! The benches' random numbers: xorshift64*, small, seeded, the same sequence on every machine
//! (so every run of a bench generates the same workload). Shared by `benches/plan.rs`,
//! `benches/apply.rs` and `benches/backups.rs` through `#[path]`.

/// xorshift64* state (never zero).
pub struct Rng(u64);

#[allow(dead_code, reason = "each bench uses the methods it needs")]
impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        // Never zero: xorshift stays at zero forever.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}
