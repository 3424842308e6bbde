#![allow(missing_docs, clippy::unwrap_used)] // criterion_group! makes undocumented fns; a bench may unwrap
//! Subscription matching with 100k subscriptions (lookups/s) in
//! `ponte::broker::trie::SubscriptionIndex`.
//!
//! The index holds 100,000 subscriptions shaped like a fleet of devices: 99,000 exact
//! filters `site/S/dev/D/temp` (one subscriber each), 900 single-level wildcards
//! `site/S/+/D/temp`, and 100 multi-level `site/S/#`. Lookups are topics of the exact
//! filters (each matches one exact, possibly a `+` and a `#` subscriber) and topics that
//! match nothing exactly (only the wildcards can answer). The `Vec` of matches is reused,
//! as the broker does.
//!
//! ```text
//! cargo bench --bench topic_match
//! ```

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ponte::broker::mailbox::{Mailbox, OverflowPolicy};
use ponte::broker::trie::SubscriptionIndex;
use ponte::model::QoS;
use ponte::model::{TopicFilter, TopicName};

/// Sites in the synthetic fleet.
const SITES: usize = 100;
/// Devices per site with an exact subscription: SITES × DEVICES = 99,000 exact filters.
const DEVICES: usize = 990;
/// Lookups per iteration.
const LOOKUPS: usize = 1000;

fn index() -> SubscriptionIndex {
    let mut idx = SubscriptionIndex::new();
    for s in 0..SITES {
        for d in 0..DEVICES {
            let f = TopicFilter::parse(&format!("site/{s}/dev/{d}/temp")).unwrap();
            idx.insert(
                &f,
                Mailbox::new(16, OverflowPolicy::DropNewest),
                QoS::AtLeastOnce,
            );
        }
        for d in 0..9 {
            let f = TopicFilter::parse(&format!("site/{s}/+/{d}/temp")).unwrap();
            idx.insert(
                &f,
                Mailbox::new(16, OverflowPolicy::DropNewest),
                QoS::AtMostOnce,
            );
        }
        let f = TopicFilter::parse(&format!("site/{s}/#")).unwrap();
        idx.insert(
            &f,
            Mailbox::new(16, OverflowPolicy::DropNewest),
            QoS::AtMostOnce,
        );
    }
    assert_eq!(idx.len(), 100_000);
    idx
}

/// A deterministic spread of topics (no rand dependency): a multiplicative walk.
fn topics(exact: bool) -> Vec<TopicName> {
    (0..LOOKUPS)
        .map(|i| {
            let k = i.wrapping_mul(2_654_435_761) % (SITES * DEVICES);
            let (s, d) = (k / DEVICES, k % DEVICES);
            let t = if exact {
                format!("site/{s}/dev/{d}/temp")
            } else {
                format!("site/{s}/other/{d}/humidity")
            };
            TopicName::parse(&t).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let idx = index();
    let mut g = c.benchmark_group("trie_match_100k_subs");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    for (name, exact) in [("exact_topic", true), ("wildcard_only", false)] {
        let ts = topics(exact);
        let mut out = Vec::new();
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut total = 0;
                for t in &ts {
                    idx.matches(t, &mut out);
                    total += out.len();
                }
                black_box(total)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
