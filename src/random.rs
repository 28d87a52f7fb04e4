//! Unguessable identifiers: tokens, session ids, simulated SIDs.

/// `N` random bytes from the OS-seeded CSPRNG, as `2 × N` lowercase hex digits.
pub fn hex<const N: usize>() -> String {
    let bytes: [u8; N] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_has_twice_the_digits_and_differs_each_time() {
        let (a, b) = (super::hex::<16>(), super::hex::<16>());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
