//! Server-to-client WebSocket frames (RFC 6455 §5.2), written by hand for the one kind relay sends
//! on its hot path: an unmasked, final text frame. tungstenite parses what clients send and writes
//! the control frames; chat messages are framed here once and the same bytes go to every socket.
//!
//! Pure: no I/O.

/// Appends one unmasked server-to-client text frame carrying `payload` (UTF-8 the caller vouches
/// for) to `out`: 2, 4 or 10 header bytes, then the payload.
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81); // FIN, text
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// One whole text frame carrying `payload`.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    push_text_frame(&mut out, payload);
    out
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
}
