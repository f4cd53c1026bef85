//! A fixed, stable 64-bit hash.
//!
//! Feature indices, question ids and split assignments must be identical on every machine, in every process and
//! after every toolchain upgrade, or a saved model would silently read different features than it was trained on.
//! `std`'s `RandomState` is seeded per process and `DefaultHasher` is documented as unstable across releases, so
//! this module defines its own: FNV-1a over the bytes, started from a seed-dependent basis, followed by the
//! SplitMix64 finaliser so that nearby inputs spread over all bits. The function is frozen: changing it is a
//! format change of every saved model.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` with `seed`; the same inputs give the same value forever.
pub fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ mix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// The SplitMix64 finaliser: a bijection of `u64` with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic pseudo-random generator (SplitMix64) for shuffles and random baselines.
///
/// It is not cryptographic; it exists so that every seeded procedure in this crate gives the same result on every
/// platform without a dependency whose stream might change between versions.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // 53 random bits fill the mantissa exactly.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform index in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_frozen() {
        // These values pin the function: if they change, every saved model reads other features.
        assert_eq!(stable_hash(0, b""), mix64(FNV_OFFSET ^ mix64(0)));
        let a = stable_hash(7, b"hello");
        assert_eq!(a, stable_hash(7, b"hello"));
        assert_ne!(a, stable_hash(8, b"hello"));
        assert_ne!(a, stable_hash(7, b"hellp"));
    }

    #[test]
    fn generator_is_deterministic_and_uniform_enough() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let x = a.below(4);
            assert_eq!(x, b.below(4));
            counts[x] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        let f = a.next_f64();
        assert!((0.0..1.0).contains(&f));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..50).collect();
        SplitMix64::new(3).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
