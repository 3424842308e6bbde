//! Authentication material: the PSK file (DTLS pre-shared keys for `coaps`, issue 5).
pub mod psk;
