#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! makes undocumented fns; a bench may unwrap
//! MQTT codec throughput (packets/s): `ponte_mqtt::decode` and the two encoders, in the
//! 3.1.1 wire form.
//!
//! Each iteration decodes or encodes a batch of `N` packets held in one buffer, the way the
//! connection driver sees them (many packets per socket read / write). PUBLISH is measured
//! at QoS 0 and QoS 1 with 100-byte payloads (the issue's reference size) and 1 KiB; PUBACK
//! is the other packet on the QoS 1 hot path.
//!
//! ```text
//! cargo bench --bench mqtt_codec
//! ```

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ponte_mqtt::{
    decode, encode, encode_publish, Packet, ProtocolVersion, PubResponse, Publish, QoS,
};

/// Packets per iteration: enough to amortise the loop, small enough to stay in cache.
const N: usize = 1024;
/// The decoder's packet size limit (ponte's default).
const MAX_PACKET: usize = 16 * 1024 * 1024 + 65_536;

fn publish(qos: QoS, size: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "bench/sensor/0042/temperature".to_string(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { 7 },
        payload: Bytes::from(vec![b'x'; size]),
        properties: Default::default(),
    })
}

fn wire(packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..N {
        encode(packet, ProtocolVersion::V311, &mut buf);
    }
    buf
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("mqtt_decode");
    g.throughput(Throughput::Elements(N as u64));
    let cases = [
        ("publish_qos0_100B", publish(QoS::AtMostOnce, 100)),
        ("publish_qos1_100B", publish(QoS::AtLeastOnce, 100)),
        ("publish_qos1_1KiB", publish(QoS::AtLeastOnce, 1024)),
        ("puback", Packet::PubAck(PubResponse::success(7))),
    ];
    for (name, packet) in &cases {
        let template = wire(packet);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched_ref(
                || template.clone(),
                |buf| {
                    let mut n = 0;
                    while let Ok(Some(p)) = decode(buf, MAX_PACKET, ProtocolVersion::V311) {
                        black_box(&p);
                        n += 1;
                    }
                    assert_eq!(n, N);
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("mqtt_encode");
    g.throughput(Throughput::Elements(N as u64));
    let payload = vec![b'x'; 100];
    let mut out = BytesMut::with_capacity(N * 160);
    // The broker's fan-out path: borrowed topic and payload, no Packet built.
    for (name, qos) in [
        ("encode_publish_qos0_100B", QoS::AtMostOnce),
        ("encode_publish_qos1_100B", QoS::AtLeastOnce),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                out.clear();
                for i in 0..N {
                    let pkid = if qos == QoS::AtMostOnce {
                        0
                    } else {
                        (i as u16 % 65_535) + 1
                    };
                    encode_publish(
                        &mut out,
                        false,
                        qos,
                        false,
                        "bench/sensor/0042/temperature",
                        pkid,
                        &payload,
                    );
                }
                black_box(out.len())
            })
        });
    }
    // The generic encoder over a built Packet.
    for (name, packet) in [
        ("packet_publish_qos1_100B", publish(QoS::AtLeastOnce, 100)),
        ("packet_puback", Packet::PubAck(PubResponse::success(7))),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..N {
                    encode(&packet, ProtocolVersion::V311, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
