//! Server-to-client WebSocket frames (RFC 6455 §5.2), written by hand for the one kind relay sends
//! on its hot path: an unmasked, final text frame. tungstenite parses what clients send and writes
//! the control frames; chat messages are framed here once and the same bytes go to every socket.
//!
//! Pure: no I/O.

/// Appends one unmasked server-to-client text frame carrying `payload` (UTF-8 the caller vouches
/// for) to `out`: 2, 4 or 10 header bytes, then the payload.
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let (head, n) = text_frame_header(payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// The header of an unmasked server-to-client text frame of `len` payload bytes: the buffer and
/// how many of its bytes are the header (2, 4 or 10).
pub fn text_frame_header(len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x81; // FIN, text
    if len < 126 {
        head[1] = len as u8;
        (head, 2)
    } else if let Ok(short) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&short.to_be_bytes());
        (head, 4)
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (head, 10)
    }
}

/// One whole text frame carrying `payload`.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    push_text_frame(&mut out, payload);
    out
}

/// Lets a client close with code 1014 (IANA "Bad Gateway") and have it echoed, as every other
/// registered code is.
///
/// tungstenite 0.30 knows the close codes of RFC 6455 plus 1012 and 1013, and answers a close
/// with any code its `CloseCode::is_allowed` does not list — 1014 among them — as a protocol
/// error, 1002 (tungstenite-rs issue #502, open). This scanner sits on the byte stream between
/// the socket and tungstenite: it follows the client's frames (RFC 6455 §5.2: header, extended
/// length, masking key, payload), and in a close frame whose code is 1014 it changes the code to
/// 1000 (both share the high byte 0x03, so only the second code byte changes, even if the frame
/// arrives split); tungstenite then echoes 1000 with the client's reason, and
/// [`CloseCodeFix::outbound`] turns that echo back into 1014. Nothing else is touched: codes
/// that must be refused (1004–1006, 1015, 1016–2999, below 1000) still get 1002.
///
/// Pure: no I/O.
#[derive(Debug, Default)]
pub struct CloseCodeFix {
    /// The frame header being collected (at most 2 + 8 + 4 bytes) and how much of it is here.
    header: [u8; 14],
    have: usize,
    /// Payload bytes left in the current frame; `None` while reading a header.
    remaining: Option<u64>,
    /// The current frame is a close frame.
    close: bool,
    /// Index of the next payload byte in the current frame.
    pos: u64,
    mask: [u8; 4],
    /// The close code's first byte, unmasked.
    high: u8,
    /// A 1014 was changed to 1000 and its echo is still to be restored.
    swapped: bool,
}

/// RFC 6455 close codes, as their two payload bytes.
const CODE_1014_LOW: u8 = 0xF6; // 1014 = 0x03F6
const CODE_1000_LOW: u8 = 0xE8; // 1000 = 0x03E8
const CODE_HIGH: u8 = 0x03;

impl CloseCodeFix {
    /// Follows `bytes` (the next bytes the client sent, in order) and rewrites, in place, a close
    /// code 1014 to 1000.
    pub fn inbound(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let Some(remaining) = self.remaining else {
                self.header[self.have] = bytes[i];
                self.have += 1;
                i += 1;
                self.header_byte();
                continue;
            };
            let take = remaining.min((bytes.len() - i) as u64) as usize;
            if self.close && self.pos < 2 {
                for (k, byte) in bytes[i..i + take].iter_mut().enumerate() {
                    let at = self.pos + k as u64;
                    if at >= 2 {
                        break;
                    }
                    let key = self.mask[at as usize % 4];
                    let plain = *byte ^ key;
                    if at == 0 {
                        self.high = plain;
                    } else if self.high == CODE_HIGH && plain == CODE_1014_LOW {
                        *byte = CODE_1000_LOW ^ key;
                        self.swapped = true;
                    }
                }
            }
            self.pos += take as u64;
            i += take;
            let left = remaining - take as u64;
            self.remaining = (left > 0).then_some(left);
        }
    }

    /// After a header byte: once the header is whole, starts its payload.
    fn header_byte(&mut self) {
        if self.have < 2 {
            return;
        }
        let masked = self.header[1] & 0x80 != 0;
        let extended = match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + extended + if masked { 4 } else { 0 };
        if self.have < need {
            return;
        }
        let len = match extended {
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            8 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
            _ => u64::from(self.header[1] & 0x7F),
        };
        self.mask = if masked {
            self.header[need - 4..need].try_into().expect("4 bytes")
        } else {
            [0; 4]
        };
        self.close = self.header[0] & 0x0F == 0x8;
        self.pos = 0;
        self.have = 0;
        self.remaining = (len > 0).then_some(len);
    }

    /// Whether [`CloseCodeFix::outbound`] has an echo to restore.
    pub fn pending(&self) -> bool {
        self.swapped
    }

    /// In whole server frames (unmasked, as tungstenite writes them), turns the echo of a close
    /// [`CloseCodeFix::inbound`] changed from 1014 to 1000 back into 1014.
    pub fn outbound(&mut self, frames: &mut [u8]) {
        let mut at = 0;
        while self.swapped && at + 2 <= frames.len() {
            let (header, len) = match frames[at + 1] & 0x7F {
                126 if at + 4 <= frames.len() => (
                    4,
                    usize::from(u16::from_be_bytes([frames[at + 2], frames[at + 3]])),
                ),
                127 if at + 10 <= frames.len() => (
                    10,
                    u64::from_be_bytes(frames[at + 2..at + 10].try_into().expect("8 bytes"))
                        as usize,
                ),
                126 | 127 => return,
                n => (2, usize::from(n)),
            };
            let payload = at + header;
            if frames[at] & 0x0F == 0x8
                && len >= 2
                && frames.get(payload..payload + 2) == Some(&[CODE_HIGH, CODE_1000_LOW])
            {
                frames[payload + 1] = CODE_1014_LOW;
                self.swapped = false;
            }
            at = payload.saturating_add(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    #[test]
    fn text_frames_match_tungstenite_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 100_000] {
            let payload = "x".repeat(len);
            let ours = text_frame(payload.as_bytes());
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Text), true)
                .format(&mut theirs)
                .expect("format");
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    /// A masked client close frame with `code` and `reason`, as a browser sends it.
    fn client_close(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![0x88, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn unmasked_code(frame: &[u8]) -> u16 {
        let mask = &frame[2..6];
        u16::from_be_bytes([frame[6] ^ mask[0], frame[7] ^ mask[1]])
    }

    /// A masked client text frame of `len` bytes (every length class of the header).
    fn client_text(len: usize) -> Vec<u8> {
        let mut out = vec![0x81];
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        // Payload bytes that look like a close frame, to prove they are skipped as payload.
        out.extend(std::iter::repeat_n(0x88, len));
        out
    }

    #[test]
    fn a_close_1014_becomes_1000_in_however_many_pieces_it_arrives() {
        let close = client_close(1014, "bad gateway");
        for split in 0..=close.len() {
            for prefix_len in [0, 5, 300, 70_000] {
                let mut stream = client_text(prefix_len);
                let close_at = stream.len();
                stream.extend_from_slice(&close);
                let mut fix = CloseCodeFix::default();
                let (a, b) = stream.split_at_mut(close_at + split);
                fix.inbound(a);
                fix.inbound(b);
                assert_eq!(
                    unmasked_code(&stream[close_at..]),
                    1000,
                    "split {split}, after {prefix_len}"
                );
                assert!(fix.pending());
                assert_eq!(
                    &stream[..close_at],
                    &client_text(prefix_len)[..],
                    "the text frame is untouched"
                );
            }
        }
    }

    #[test]
    fn every_other_close_code_passes_unchanged() {
        for code in [
            1000,
            1001,
            1002,
            1003,
            1004,
            1005,
            1006,
            1007,
            1011,
            1012,
            1013,
            1015,
            1016,
            2999,
            3000,
            4999,
            0x03F6 + 0x0100,
            246,
        ] {
            let mut frame = client_close(code, "x");
            let mut fix = CloseCodeFix::default();
            fix.inbound(&mut frame);
            assert_eq!(unmasked_code(&frame), code);
            assert!(!fix.pending(), "{code}");
        }
    }

    #[test]
    fn the_echo_of_a_swapped_close_is_restored_once() {
        let mut fix = CloseCodeFix::default();
        fix.inbound(&mut client_close(1014, "bad gateway"));
        // tungstenite's echo, after a pong in the same write.
        let mut out = vec![0x8A, 0x00, 0x88, 13, 0x03, 0xE8];
        out.extend_from_slice(b"bad gateway");
        fix.outbound(&mut out);
        assert_eq!(&out[4..6], &[0x03, 0xF6]);
        assert!(!fix.pending());
        // A later 1000 (none was swapped) stays 1000.
        let mut again = vec![0x88, 2, 0x03, 0xE8];
        fix.outbound(&mut again);
        assert_eq!(&again[2..4], &[0x03, 0xE8]);
    }
}
