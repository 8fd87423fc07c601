//! Hostile input against every decoder: arbitrary bytes and near-valid packets must never panic,
//! and whatever decodes must be well-formed. Bounded: PROPTEST_CASES (default 2,000 per property)
//! keeps this inside the test command's time; raise it for a longer soak.

use proptest::prelude::*;
use relay::chat;
use relay::protocol::{engineio, socketio};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2_000)
}

/// Text that looks like our protocol: type digits, namespaces, ack ids and JSON fragments.
fn packetish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("4".to_string()),
        Just("2".to_string()),
        Just("0".to_string()),
        Just("/admin,".to_string()),
        Just("/".to_string()),
        Just(",".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"chat message\"".to_string()),
        Just("\"serverOffset\":".to_string()),
        Just("\\ud800".to_string()),
        Just("-".to_string()),
        "[0-9]{1,25}",
        "\\PC{0,8}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn run(strategy: impl Strategy<Value = String>, check: impl Fn(&str)) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases()));
    runner
        .run(&strategy, |text| {
            check(&text);
            Ok(())
        })
        .expect("property holds");
}

fn decode_everything(text: &str) {
    let _ = engineio::decode(text);
    if let Ok(packet) = socketio::decode(text) {
        // Whatever decodes obeys the reference parser's shape rules (which check a payload
        // only when there is one: an EVENT or ACK without one is ignored by the server).
        match packet.kind {
            socketio::Kind::Event => assert!(packet.data.as_ref().is_none_or(|d| d.is_array())),
            socketio::Kind::Ack => assert!(packet.data.as_ref().is_none_or(|d| d.is_array())),
            socketio::Kind::Disconnect => assert!(packet.data.is_none()),
            socketio::Kind::Connect => {
                assert!(packet.data.as_ref().is_none_or(|d| d.is_object()));
                let _ = chat::server_offset(packet.data.as_ref());
            }
            _ => {}
        }
        assert!(packet.nsp.starts_with('/'));
        if let (socketio::Kind::Event, Some(data)) = (packet.kind, packet.data) {
            let _ = chat::parse_event(&relay::room::Room::main(), data, 65_535, packet.lossy);
        }
    }
}

#[test]
fn arbitrary_text_never_panics_a_decoder() {
    run("\\PC*", decode_everything);
    run(".*", decode_everything);
}

#[test]
fn near_valid_packets_never_panic_and_decode_consistently() {
    run(packetish(), |t| {
        decode_everything(t);
        // Through the Engine.IO layer as a frame would arrive.
        if let Ok(engineio::Inbound::Message(inner)) = engineio::decode(t) {
            decode_everything(inner);
        }
    });
}

#[test]
fn arbitrary_bytes_as_lossy_text_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases()));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            decode_everything(&String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .expect("property holds");
}

#[test]
fn every_valid_chat_event_round_trips() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases()));
    runner
        .run(
            &("\\PC{0,64}", "\\PC{1,40}", 0u64..u64::MAX),
            |(msg, offset, ack)| {
                let frame = format!(
                    "42{ack}{}",
                    serde_json::json!(["chat message", msg, offset])
                );
                let Ok(engineio::Inbound::Message(inner)) = engineio::decode(&frame) else {
                    panic!("{frame}")
                };
                let p = socketio::decode(inner).expect("valid event");
                prop_assert_eq!(p.id, Some(ack));
                let m = chat::parse_event(
                    &relay::room::Room::main(),
                    p.data.unwrap_or_default(),
                    65_535,
                    p.lossy,
                )
                .expect("valid message");
                prop_assert_eq!(&m.content, &msg);
                prop_assert_eq!(&m.client_offset, &offset);
                // And the broadcast of it decodes back to the same text.
                let out = socketio::encode_event_text_id("/", chat::EVENT, &m.content, ack, false);
                let back = socketio::decode(&out[1..]).expect("broadcast decodes");
                prop_assert_eq!(
                    back.data,
                    Some(serde_json::json!(["chat message", msg, ack]))
                );
                Ok(())
            },
        )
        .expect("property holds");
}
