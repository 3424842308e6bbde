#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! makes undocumented fns; a bench may unwrap
//! Retained-store write throughput: what group commit buys.
//!
//! Each iteration writes `n` retained values and waits until all are durable, either one at
//! a time (every write pays its own fsync) or from `n` concurrent writers (the writer thread
//! folds them into a few batches, one fsync each). Compared for sled and for the memory
//! engine (no fsync at all), which is the ceiling.
//!
//! Reads (`retained_get`) are served from the in-memory index whatever the engine: the
//! group measures `Retained::get` over 10,000 stored values of a sled-backed store.
//!
//! ```text
//! cargo bench --bench retained
//! ```

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ponte::broker::retained::{Precondition, Retained};
use ponte::model::QoS;
use ponte::model::TopicName;
use ponte::store::memory::MemoryStore;
use ponte::store::sled::SledStore;

const N: usize = 256;

fn topics() -> Arc<Vec<TopicName>> {
    Arc::new(
        (0..N)
            .map(|i| TopicName::parse(&format!("bench/{i}")).unwrap())
            .collect(),
    )
}

async fn sequential(r: &Retained, topics: &[TopicName], payload: &Bytes) {
    for t in topics {
        r.write(
            t.clone(),
            Some((payload.clone(), None, QoS::AtLeastOnce)),
            Precondition::none(),
        )
        .await
        .unwrap();
    }
}

async fn concurrent(r: &Arc<Retained>, topics: &Arc<Vec<TopicName>>, payload: &Bytes) {
    let mut tasks = Vec::with_capacity(topics.len());
    for i in 0..topics.len() {
        let (r, topics, payload) = (r.clone(), topics.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            r.write(
                topics[i].clone(),
                Some((payload, None, QoS::AtLeastOnce)),
                Precondition::none(),
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = Bytes::from(vec![b'x'; 100]);
    let topics = topics();
    let dir = tempfile::tempdir().unwrap();
    let engines: Vec<(&str, Arc<Retained>)> = vec![
        ("memory", Arc::new(Retained::open(MemoryStore).unwrap())),
        (
            "sled",
            Arc::new(Retained::open(SledStore::open(dir.path()).unwrap()).unwrap()),
        ),
    ];
    let mut g = c.benchmark_group("retained_write_100B");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    for (name, r) in &engines {
        g.bench_function(BenchmarkId::new("sequential", name), |b| {
            b.iter(|| rt.block_on(sequential(r, &topics, &payload)))
        });
        g.bench_function(BenchmarkId::new("concurrent", name), |b| {
            b.iter(|| rt.block_on(concurrent(r, &topics, &payload)))
        });
    }
    g.finish();
}

/// Values stored before the read benchmark.
const STORED: usize = 10_000;
/// Reads per iteration.
const READS: usize = 1000;

fn bench_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = Arc::new(Retained::open(SledStore::open(dir.path()).unwrap()).unwrap());
    let payload = Bytes::from(vec![b'x'; 100]);
    let all: Arc<Vec<TopicName>> = Arc::new(
        (0..STORED)
            .map(|i| TopicName::parse(&format!("stored/{i}")).unwrap())
            .collect(),
    );
    // Load them concurrently in chunks so the setup shares fsyncs.
    for chunk in all.chunks(N) {
        rt.block_on(concurrent(&r, &Arc::new(chunk.to_vec()), &payload));
    }
    let reads: Vec<TopicName> = (0..READS)
        .map(|i| all[i.wrapping_mul(7919) % STORED].clone())
        .collect();
    let mut g = c.benchmark_group("retained_get");
    g.throughput(Throughput::Elements(READS as u64));
    g.bench_function(BenchmarkId::new("get_hit", "sled_10k"), |b| {
        b.iter(|| {
            let mut bytes = 0;
            for t in &reads {
                bytes += r.get(t).map_or(0, |v| v.payload.len());
            }
            criterion::black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_get);
criterion_main!(benches);
