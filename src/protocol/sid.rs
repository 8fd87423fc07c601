//! Session ids: the Engine.IO `sid` of the open packet and the Socket.IO `sid` of the CONNECT
//! reply, both 20 url-safe characters like the reference server's.

/// Characters in a session id.
pub const SID_LEN: usize = 20;

/// A session id, inline: 20 url-safe ASCII characters in 20 bytes, where a `Box<str>` would be
/// two words and a heap allocation (every socket holds two or three ids all its life).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; SID_LEN]);

impl Sid {
    /// A fresh random id (120 bits from the OS's random source).
    ///
    /// Without OS randomness (never seen on Linux) it falls back to the clock: ids must then only
    /// be unique, not secret, which holds for both sids (neither grants anything over WebSocket).
    pub fn random() -> Sid {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = [0u8; 15];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            bytes.copy_from_slice(&nanos.to_le_bytes()[..15]);
        }
        let mut out = [0u8; SID_LEN];
        for (i, chunk) in bytes.chunks(3).enumerate() {
            let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
            for (j, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                out[i * 4 + j] = ALPHABET[((n >> shift) & 63) as usize];
            }
        }
        Sid(out)
    }

    /// `text` as an id, if it is one: exactly 20 url-safe characters.
    pub fn parse(text: &str) -> Option<Sid> {
        let bytes: [u8; SID_LEN] = text.as_bytes().try_into().ok()?;
        bytes.iter().all(|c| is_url_safe(*c)).then_some(Sid(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only url-safe ASCII ever gets in (`random`, `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A fresh 20-character url-safe random id, as a `String` ([`Sid::random`]).
pub fn new_sid() -> String {
    Sid::random().as_str().to_owned()
}

/// Whether `c` may be in an id: an ASCII letter or digit, `-` or `_` (base64url's alphabet).
pub fn is_url_safe(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_url_safe_characters_and_differ() {
        let a = new_sid();
        let b = new_sid();
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(is_url_safe));
        assert_ne!(a, b);
    }

    #[test]
    fn an_id_parses_back_and_nothing_else_does() {
        let a = Sid::random();
        assert_eq!(Sid::parse(a.as_str()), Some(a));
        assert_eq!(a.to_string().len(), SID_LEN);
        for bad in [
            "",
            "short",
            "abcdefghijklmnopqrs!",
            "abcdefghijklmnopqrstu",
            "abcdefghijklmnopqrsé",
        ] {
            assert_eq!(Sid::parse(bad), None, "{bad:?}");
        }
    }
}
