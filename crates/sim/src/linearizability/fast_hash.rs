//! A small, fast, deterministic hasher for the checker's tables (the multiply-rotate hash
//! rustc uses, known as `FxHash`). Not resistant to chosen inputs, which a checker does not face;
//! seeded by nothing, so a run behaves the same every time.

use std::hash::{BuildHasherDefault, Hasher};

use mosaic_raft::SplitMix64;

/// The multiplier of `FxHash`: an odd constant with well-spread bits.
const MULTIPLIER: u64 = 0x517C_C1B7_2722_0A95;

/// A [`Hasher`] that folds each word in with a rotate, an xor and a multiply.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes")));
        }
        let mut tail = [0_u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds [`FastHasher`]s, for `HashMap::with_hasher`.
pub(super) type FastBuildHasher = BuildHasherDefault<FastHasher>;

/// A well-mixed 64-bit image of `value` (one [`SplitMix64`] step from it), for combining
/// small ids into a hash that the table's low bits can use.
pub(super) fn mix(value: u64) -> u64 {
    SplitMix64::new(value).next_u64()
}
