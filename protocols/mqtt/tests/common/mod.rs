//! Shared helpers of the sans-IO tests (`codec`, `connection`, `v5`): a state machine on a
//! fake clock and the proptest strategies more than one file draws from.

#![allow(dead_code, unreachable_pub)]

use std::time::Instant;

use ponte_mqtt::{Config, Connection, Properties, QoS};
use proptest::prelude::*;

/// A connection whose configuration is the default adjusted by `f`, and its start instant.
pub(crate) fn machine(f: impl FnOnce(&mut Config)) -> (Connection, Instant) {
    let t0 = Instant::now();
    let mut config = Config::default();
    f(&mut config);
    (Connection::new(t0, config), t0)
}

/// Any QoS.
pub(crate) fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Set the one-byte Remaining Length of a hand-built packet to what follows it.
pub(crate) fn fix_length(packet: &mut [u8]) {
    packet[1] = (packet.len() - 2) as u8;
}

/// Properties: the defaults with `f` applied.
pub(crate) fn props(f: impl FnOnce(&mut Properties)) -> Properties {
    let mut p = Properties::default();
    f(&mut p);
    p
}
