//! Random values that must not be guessed — signing keys, resume tokens, session, room
//! and player ids, generated credentials — come from the operating system's CSPRNG
//! (`getrandom`), never from a seeded or fast generator.

/// `n` random bytes from the operating system.
fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        // No entropy source is a broken machine, not bad input: nothing safe to return.
        panic!("the operating system's random source failed: {e}");
    }
    buf
}

/// A random 64-bit number.
pub fn u64() -> u64 {
    u64::from_le_bytes(bytes::<8>())
}

/// A random number in `1..2^53` (a player id JSON clients read exactly).
pub fn id53() -> u64 {
    (u64() & ((1 << 53) - 1)).max(1)
}

/// `N` random bytes as `2 * N` lowercase hex digits.
pub fn hex<const N: usize>() -> String {
    hex::encode(bytes::<N>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_differ_and_have_their_shape() {
        assert_ne!(super::u64(), super::u64());
        let token = super::hex::<32>();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        for _ in 0..1000 {
            let id = super::id53();
            assert!(id > 0 && id < (1 << 53));
        }
    }
}
