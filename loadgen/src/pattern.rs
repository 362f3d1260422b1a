//! Deterministic byte patterns, one stream per client, so that corruption, reordering or
//! cross-talk between tunnels shows up as a mismatch at a known offset.
//!
//! The byte at stream offset `o` of the stream keyed `k` is byte `o % 8` (little-endian) of
//! `splitmix64(k + o / 8)`. Two clients with different keys see unrelated streams, and a
//! shifted or repeated chunk does not match its own offset.

/// The splitmix64 finaliser: a cheap, well-mixed 64-bit permutation.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pattern {
    key: u64,
}

/// The first byte where a received chunk differs from the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// Stream offset of the first wrong byte.
    pub(crate) offset: u64,
    /// The byte the pattern has there.
    pub(crate) expected: u8,
    /// The byte that arrived.
    pub(crate) got: u8,
}

impl Pattern {
    /// The stream of client `client` in a run seeded with `seed`.
    pub(crate) fn new(seed: u64, client: u64) -> Self {
        Self {
            key: splitmix64(seed ^ splitmix64(client)),
        }
    }

    /// The byte at stream offset `offset`.
    pub(crate) fn byte_at(&self, offset: u64) -> u8 {
        let word = splitmix64(self.key.wrapping_add(offset / 8));
        word.to_le_bytes()[(offset % 8) as usize]
    }

    /// Fills `buf` with the pattern bytes starting at stream offset `offset`.
    pub(crate) fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = 0usize;
        let mut off = offset;
        // Unaligned head, one byte at a time.
        while pos < buf.len() && !off.is_multiple_of(8) {
            buf[pos] = self.byte_at(off);
            pos += 1;
            off += 1;
        }
        // Whole words.
        let mut chunks = buf[pos..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&splitmix64(self.key.wrapping_add(off / 8)).to_le_bytes());
            off += 8;
        }
        // Tail.
        for b in chunks.into_remainder() {
            *b = self.byte_at(off);
            off += 1;
        }
    }

    /// Checks that `buf` equals the pattern bytes starting at stream offset `offset`.
    pub(crate) fn verify(&self, offset: u64, buf: &[u8]) -> Result<(), Mismatch> {
        let mut expected = [0u8; 4096];
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(expected.len());
            let at = offset + done as u64;
            self.fill(at, &mut expected[..n]);
            if expected[..n] != buf[done..done + n] {
                // Find the exact byte for the report.
                let (i, (e, g)) = expected[..n]
                    .iter()
                    .zip(&buf[done..done + n])
                    .enumerate()
                    .find(|(_, (e, g))| e != g)
                    .unwrap_or((0, (&0, &0)));
                return Err(Mismatch {
                    offset: at + i as u64,
                    expected: *e,
                    got: *g,
                });
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_matches_byte_at_for_every_alignment() {
        let p = Pattern::new(7, 42);
        for start in 0..17u64 {
            for len in [0usize, 1, 7, 8, 9, 31, 100] {
                let mut buf = vec![0u8; len];
                p.fill(start, &mut buf);
                for (i, b) in buf.iter().enumerate() {
                    assert_eq!(
                        *b,
                        p.byte_at(start + i as u64),
                        "start {start} len {len} i {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunked_fill_equals_one_fill() {
        let p = Pattern::new(1, 2);
        let mut whole = vec![0u8; 10_000];
        p.fill(3, &mut whole);
        let mut pieces = vec![0u8; 10_000];
        let mut at = 0usize;
        for size in [1usize, 5, 64, 333, 4096, 5501].iter().cycle() {
            if at >= pieces.len() {
                break;
            }
            let end = (at + size).min(pieces.len());
            p.fill(3 + at as u64, &mut pieces[at..end]);
            at = end;
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn verify_accepts_the_pattern_across_internal_chunks() {
        let p = Pattern::new(9, 9);
        let mut buf = vec![0u8; 20_000];
        p.fill(12_345, &mut buf);
        assert_eq!(p.verify(12_345, &buf), Ok(()));
    }

    #[test]
    fn verify_reports_the_first_corrupt_byte() {
        let p = Pattern::new(9, 9);
        let mut buf = vec![0u8; 9000];
        p.fill(100, &mut buf);
        buf[5000] ^= 0x40;
        buf[6000] ^= 0x01;
        let err = p.verify(100, &buf).unwrap_err();
        assert_eq!(err.offset, 5100);
        assert_eq!(err.got, err.expected ^ 0x40);
    }

    #[test]
    fn verify_detects_a_shifted_stream() {
        let p = Pattern::new(3, 4);
        let mut buf = vec![0u8; 256];
        p.fill(1, &mut buf);
        assert!(p.verify(0, &buf).is_err());
    }

    #[test]
    fn another_clients_bytes_do_not_verify() {
        let a = Pattern::new(5, 1);
        let b = Pattern::new(5, 2);
        let mut buf = vec![0u8; 64];
        b.fill(0, &mut buf);
        assert!(a.verify(0, &buf).is_err());
        let c = Pattern::new(6, 1);
        c.fill(0, &mut buf);
        assert!(
            a.verify(0, &buf).is_err(),
            "a different seed gives a different stream"
        );
    }
}
