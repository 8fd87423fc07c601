//! Session ids: the Engine.IO `sid` of the open packet and the Socket.IO `sid` of the CONNECT
//! reply, both 20 url-safe characters like the reference server's.

/// A fresh 20-character url-safe random id (120 bits from the OS's random source).
///
/// Without OS randomness (never seen on Linux) it falls back to the clock: ids must then only be
/// unique, not secret, which holds for both sids (neither grants anything over WebSocket).
pub fn new_sid() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 15];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..15]);
    }
    let mut out = String::with_capacity(20);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_url_safe_characters_and_differ() {
        let a = new_sid();
        let b = new_sid();
        assert_eq!(a.len(), 20);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }
}
