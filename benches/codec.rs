//! Hot paths in process: packet decode/encode, the chat rules on a decoded event, and a broadcast's
//! encode + copy into N sockets' output buffers (relay's encode-once against encoding per socket).
//!
//! `cargo bench --bench codec`; compare within one run, these machines are noisy.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::chat;
use relay::delivery::batch::Message;
use relay::log::{Entry, Wire};
use relay::protocol::{engineio, socketio, websocket};
use std::hint::black_box;

const EVENT_FRAME: &str = r#"421["chat message","hello world, this is a typical chat line 😀","Xy3kPqZ8a1b2c3d4e5f6-17"]"#;

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("event frame -> NewMessage", |b| {
        b.iter(|| {
            let Ok(engineio::Inbound::Message(p)) = engineio::decode(black_box(EVENT_FRAME)) else {
                unreachable!()
            };
            let packet = socketio::decode(p).expect("valid");
            chat::parse_event(
                &relay::room::Room::main(),
                packet.data.unwrap_or_default(),
                65_535,
                false,
            )
            .expect("valid")
        })
    });
    g.bench_function("connect with auth", |b| {
        b.iter(|| socketio::decode(black_box(r#"0{"serverOffset":123456}"#)))
    });
    g.bench_function("pong", |b| b.iter(|| engineio::decode(black_box("3"))));
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let text = "hello world, this is a typical chat line 😀 with \"quotes\"";
    g.bench_function("broadcast frame", |b| {
        b.iter(|| {
            socketio::encode_event_text_id(
                "/",
                chat::EVENT,
                black_box(text),
                black_box(123_456),
                false,
            )
        })
    });
    g.bench_function("empty ack", |b| {
        b.iter(|| socketio::encode_empty_ack("/", black_box(17)))
    });
    g.finish();
}

/// One message into N sockets' output buffers, as the fan-out does it: the WebSocket frame encoded
/// once and copied into each buffer, against encoding the packet and framing it per socket.
fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let text = "hello world, this is a typical chat line 😀";
    for n in [10usize, 100, 1000] {
        g.throughput(Throughput::Elements(n as u64));
        let mut buffers: Vec<Vec<u8>> = vec![Vec::with_capacity(256); n];
        g.bench_with_input(
            BenchmarkId::new("encode once, copy bytes", n),
            &n,
            |b, _| {
                let mut entry = Entry::message(0, text.into());
                b.iter(|| {
                    entry.id += 1;
                    let m = Message::encode(&entry, Wire::default());
                    for buf in &mut buffers {
                        buf.clear();
                        buf.extend_from_slice(m.ws_frame());
                    }
                    black_box(&buffers);
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("encode per socket", n), &n, |b, _| {
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                for buf in &mut buffers {
                    buf.clear();
                    let packet = socketio::encode_event_text_id("/", chat::EVENT, text, id, false);
                    websocket::push_text_frame(buf, packet.as_bytes());
                }
                black_box(&buffers);
            })
        });
    }
    g.finish();
}

/// A fan-out pass's frames (20 chat messages) into 1,000 sockets' output buffers, then "written":
/// relay frees a buffer once the connection took all of it (an idle socket keeps nothing), and
/// starts an empty one with 1 KiB; against keeping each buffer's capacity for ever, and against
/// freeing it and growing it again frame by frame.
fn output_buffer(c: &mut Criterion) {
    let mut g = c.benchmark_group("output buffer");
    let entries: Vec<Entry> = (1..=20)
        .map(|id| Entry::message(id, "hello world, this is a typical chat line".into()))
        .collect();
    let frames: Vec<Message> = entries
        .iter()
        .map(|e| Message::encode(e, Wire::default()))
        .collect();
    let n = 1000;
    g.throughput(Throughput::Elements((n * frames.len()) as u64));
    let pass = |buffers: &mut Vec<Vec<u8>>, first: usize, keep: bool| {
        for buf in buffers.iter_mut() {
            if buf.capacity() == 0 {
                buf.reserve(first);
            }
            for m in &frames {
                buf.extend_from_slice(m.ws_frame());
            }
            black_box(&*buf);
            if keep {
                buf.clear();
            } else {
                *buf = Vec::new();
            }
        }
    };
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); n];
    g.bench_function("freed after each write, 1 KiB first (relay)", |b| {
        b.iter(|| pass(&mut buffers, 1024, false))
    });
    g.bench_function("freed after each write, grown frame by frame", |b| {
        b.iter(|| pass(&mut buffers, 0, false))
    });
    g.bench_function("capacity kept", |b| b.iter(|| pass(&mut buffers, 0, true)));
    g.finish();
}

criterion_group!(benches, decode, encode, fanout, output_buffer);
criterion_main!(benches);
