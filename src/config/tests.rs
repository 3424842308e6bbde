//! Unit tests of the configuration: defaults, files, validation and resolution.

use super::*;

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
}

#[test]
fn file_sets_nested_keys() {
    let c = Config::from_toml(
        "host = \"127.0.0.1\"\n[http]\nport = 8080\ncors_origins = [\"https://a.example\"]\n[mqtt]\noverflow = \"drop-oldest\"\n",
    )
    .unwrap();
    assert_eq!(c.http.port, 8080);
    assert_eq!(c.http_addr().to_string(), "127.0.0.1:8080");
    assert_eq!(c.mqtt.overflow, OverflowPolicy::DropOldest);
}

#[test]
fn coap_section_sets_tcp_and_the_notify_policy() {
    let c = Config::from_toml(
        "[coap]\ntcp = false\nnotify = \"non-with-periodic-con\"\ncon_notify_interval_secs = 60\n",
    )
    .unwrap();
    assert!(!c.coap.tcp);
    assert_eq!(c.coap.notify, CoapNotify::NonWithPeriodicCon);
    assert_eq!(c.coap.con_notify_interval_secs, 60);
    assert!(Config::default().coap.tcp, "CoAP over TCP is on by default");
    assert!(Config::from_toml("[coap]\nnotify = \"sometimes\"\n").is_err());
}

#[test]
fn coap_section_sets_the_dtls_listener() {
    let d = Config::default();
    assert_eq!(d.coap.dtls_port, 5684, "RFC 7252 §12.7: coaps default port");
    let c = Config::from_toml(
        "host = \"127.0.0.1\"\n[coap]\ndtls_port = 15684\ndtls_max_sessions = 7\ndtls_idle_timeout_secs = 9\n",
    )
    .unwrap();
    assert_eq!(c.coaps_addr().to_string(), "127.0.0.1:15684");
    assert_eq!(c.coap.dtls_max_sessions, 7);
    assert_eq!(c.coap.dtls_idle_timeout_secs, 9);
}

#[test]
fn tls_section_and_ports() {
    let c = Config::from_toml(
        "[tls]\ncert_file = \"s.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\nrequire_client_cert = true\nuse_identity_as_username = true\n[http]\ntls_port = 8443\n[mqtt]\nwss_port = 8084\n",
    )
    .unwrap();
    assert!(c.tls.enabled());
    assert!(c.tls.require_client_cert && c.tls.use_identity_as_username);
    assert_eq!(c.mqtts_addr().port(), 8883, "mqtts defaults to IANA's 8883");
    assert_eq!(c.https_addr().map(|a| a.port()), Some(8443));
    assert_eq!(c.wss_addr().map(|a| a.port()), Some(8084));
    let d = Config::default();
    assert!(!d.tls.enabled(), "no TLS without certificates");
    assert_eq!(d.https_addr(), None);
    assert!(Config::from_toml("[tls]\ncert = \"x\"\n").is_err());
}

#[test]
fn limits_section_and_header_timeout() {
    let d = Config::default();
    assert_eq!(d.http.header_timeout_secs, 10);
    assert_eq!(
        d.http.body_timeout_secs, 30,
        "issue 16: the default body timeout"
    );
    assert_eq!(d.http.max_connections, 10_000);
    assert_eq!(d.limits, crate::limits::LimitsConfig::default());
    let c = Config::from_toml(
        "[http]\nheader_timeout_secs = 3\n[limits]\nmax_connections_per_ip = 4\nconnection_rate = 50\npublish_rate = 10\npublish_burst = 20\n",
    )
    .unwrap();
    assert_eq!(c.http.header_timeout(), Duration::from_secs(3));
    assert_eq!(
        c.limits,
        crate::limits::LimitsConfig {
            max_connections_per_ip: 4,
            connection_rate: 50,
            publish_rate: 10,
            publish_burst: 20,
            max_queued_bytes: None,
        }
    );
    let e = Config::from_toml("[limits]\npublish_rat = 1\n").unwrap_err();
    assert!(e.contains("publish_rat"), "{e}");
}

#[test]
fn unknown_keys_are_named() {
    let e = Config::from_toml("[http]\nprot = 1\n").unwrap_err();
    assert!(e.contains("prot"), "{e}");
}

#[test]
fn store_section_sets_when_retained_writes_are_synced() {
    use crate::store::sled::LogSync;
    let d = Config::default();
    assert_eq!(
        d.store.sync,
        StoreSync::Always,
        "each commit synced by default"
    );
    assert_eq!(d.store.log_sync(), LogSync::Always);
    let c = Config::from_toml("[store]\nsync = \"periodic\"\nsync_interval_ms = 250\n").unwrap();
    assert_eq!(
        c.store.log_sync(),
        LogSync::Every(Duration::from_millis(250))
    );
    let e = Config::from_toml("[store]\nsync = \"periodic\"\nsync_interval_ms = 0\n").unwrap_err();
    assert!(e.contains("sync_interval_ms"), "{e}");
    assert!(Config::from_toml("[store]\nsync = \"never\"\n").is_err());
}
