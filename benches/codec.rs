//! Hot paths in process: packet decode/encode, the chat rules on a decoded event, and a broadcast's
//! encode + fan-out to N socket queues (relay's encode-once against encoding per socket).
//!
//! `cargo bench --bench codec`; compare within one run, these machines are noisy.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::hub::Delivery;
use relay::{chat, engineio, socketio};
use std::hint::black_box;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

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
            chat::parse_event(packet.data.unwrap_or_default(), 65_535).expect("valid")
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
        b.iter(|| socketio::encode_event_text_id(chat::EVENT, black_box(text), black_box(123_456)))
    });
    g.bench_function("empty ack", |b| {
        b.iter(|| socketio::encode_empty_ack(black_box(17)))
    });
    g.finish();
}

/// One message to N subscribers of the broadcast channel, each taking its frame off its queue.
fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let text = "hello world, this is a typical chat line 😀";
    for n in [10usize, 100, 1000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("encode once, share bytes", n),
            &n,
            |b, &n| {
                let (tx, _) = broadcast::channel::<Delivery>(16);
                let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
                let mut id = 0u64;
                b.iter(|| {
                    id += 1;
                    let _ = tx.send(Delivery::new(id, text));
                    for rx in &mut rxs {
                        black_box(rx.try_recv().expect("delivered").frame);
                    }
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("encode per socket", n), &n, |b, &n| {
            let (tx, _) = broadcast::channel::<(u64, String)>(16);
            let mut rxs: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                let _ = tx.send((id, text.to_string()));
                for rx in &mut rxs {
                    let (id, text) = rx.try_recv().expect("delivered");
                    black_box(Utf8Bytes::from(socketio::encode_event_text_id(
                        chat::EVENT,
                        &text,
                        id,
                    )));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode, fanout);
criterion_main!(benches);
