//! Bringing a gateway up: every listener bound (all addresses of `--host`), the bridges and
//! webhooks started before them, the tasks that serve each protocol spawned, and the
//! start-up line that says what listens where and what is off and why.

use super::*;

/// Bind every listener and start serving over `broker`; `store_name` is what the start-up
/// log line says about the store.
pub(crate) async fn launch(
    config: Arc<Config>,
    tls: Option<Arc<Tls>>,
    auth: Arc<auth::Auth>,
    broker: Arc<Broker>,
    store_name: String,
) -> Result<Gateway, Error> {
    let bind_tcp = |protocol, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| Error::Bind {
            protocol,
            addr,
            source,
        })
    };
    let http = bind_tcp("HTTP", config.http_addr()).await?;
    let mqtt = bind_tcp("MQTT", config.mqtt_addr()).await?;
    // `host` with several addresses (or a name resolving to several): the same listener on
    // each of them, on the port the first one got.
    let port_of =
        |l: &TcpListener, asked: SocketAddr| l.local_addr().map_or(asked.port(), |a| a.port());
    let http_more = bind_more(
        "HTTP",
        &config.http_addrs(),
        port_of(&http, config.http_addr()),
    )
    .await?;
    let mqtt_more = bind_more(
        "MQTT",
        &config.mqtt_addrs(),
        port_of(&mqtt, config.mqtt_addr()),
    )
    .await?;
    let coap_addr = config.coap_addr();
    // UDP and, with `[coap] tcp`, TCP (RFC 8323) on the same port number.
    let (coap, coap_tcp) = coap::bind(&config).await?;
    let mut coap_more = Vec::new();
    for ip in config.coap_addrs().iter().skip(1).map(|a| a.ip()) {
        let mut one = (*config).clone();
        one.coap.host = Some(config::Hosts::ip(ip));
        one.coap.port = coap.local_addr().map_or(config.coap.port, |a| a.port());
        match coap::bind(&one).await {
            Ok(bound) => coap_more.push(bound),
            Err(Error::Bind { addr, source, .. }) if unavailable(&source) => {
                tracing::warn!(%addr, error = %source, "CoAP not listening on this address: not available here");
            }
            Err(e) => return Err(e),
        }
    }
    let local = |r: std::io::Result<SocketAddr>, protocol, addr| {
        r.map_err(|source| Error::Bind {
            protocol,
            addr,
            source,
        })
    };
    let ws = match config.mqtt_ws_addr() {
        Some(addr) => Some(bind_tcp("MQTT/WebSocket", addr).await?),
        None => None,
    };
    // TLS listeners: MQTT over TLS whenever `[tls]` is on; HTTPS and WSS when their
    // ports are set.
    let (mut mqtts, mut https, mut wss) = (None, None, None);
    if tls.is_some() {
        let l = bind_tcp("MQTT/TLS", config.mqtts_addr()).await?;
        let a = local(l.local_addr(), "MQTT/TLS", config.mqtts_addr())?;
        let more = bind_more("MQTT/TLS", &config.mqtts_addrs(), a.port()).await?;
        mqtts = Some((l, a, more));
        if let Some(addr) = config.https_addr() {
            let l = bind_tcp("HTTPS", addr).await?;
            let a = local(l.local_addr(), "HTTPS", addr)?;
            https = Some((l, a));
        }
        if let Some(addr) = config.wss_addr() {
            let l = bind_tcp("MQTT/WSS", addr).await?;
            let a = local(l.local_addr(), "MQTT/WSS", addr)?;
            wss = Some((l, a));
        }
    }
    let metrics_listener = match config.metrics_addr() {
        Some(addr) => {
            let l = bind_tcp("HTTP/metrics", addr).await?;
            let a = local(l.local_addr(), "HTTP/metrics", addr)?;
            Some((l, a))
        }
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
    let mqtts_addr = mqtts.as_ref().map(|(_, a, _)| *a);
    let https_addr = https.as_ref().map(|(_, a)| *a);
    let wss_addr = wss.as_ref().map(|(_, a)| *a);
    let http_addr = local(http.local_addr(), "HTTP", config.http_addr())?;
    let mqtt_addr = local(mqtt.local_addr(), "MQTT", config.mqtt_addr())?;
    let coap_addr = local(coap.local_addr(), "CoAP", coap_addr)?;
    let coaps = match &config.auth.psk_file {
        Some(_) => Some(coap::DtlsListener::bind(&config, auth.clone()).await?),
        None => None,
    };
    let coaps_addr = match &coaps {
        Some(l) => Some(local(l.local_addr(), "CoAP/DTLS", config.coaps_addr())?),
        None => None,
    };
    let coaps_stats = coaps.as_ref().map(|l| l.stats());

    let mqtt_ws_addr = match &ws {
        Some(l) => {
            let asked = config.mqtt_ws_addr().unwrap_or(config.mqtt_addr());
            Some(local(l.local_addr(), "MQTT/WebSocket", asked)?)
        }
        None => None,
    };

    // The HTTP front-end gets the configuration with the ports really bound (port 0
    // replaced), so the explorer's commands name them (`/explorer/server.json`).
    let served = Arc::new(config.with_bound_ports(
        http_addr, mqtt_addr, coap_addr, mqtts_addr, https_addr, coaps_addr,
    ));
    let controller = ShutdownController::new();
    let limits = limits::Limits::with_http_cap(config.limits.clone(), config.http.max_connections);
    // Before any mailbox exists (sessions are restored next).
    let queued_limit = config.limits.queued_bytes_limit();
    broker.budget().set_limit(queued_limit);
    tracing::debug!(limit = ?queued_limit, "[limits] max_queued_bytes");
    let front = mqtt::Mqtt::new(
        broker.clone(),
        config.clone(),
        auth.clone(),
        limits.clone(),
        controller.subscribe(),
    );
    // Bridges and webhooks start with the MQTT front-end (a bridge's out queue is a session
    // of its registry), before the listeners accept, so `/metrics` can report them.
    let bridges = bridge::Bridges::start(
        broker.clone(),
        front.clients(),
        config.mqtt.max_packet_size,
        &config.bridge,
        config.source.clone(),
        controller.subscribe(),
    )
    .await;
    let webhooks = webhook::Webhooks::start(
        broker.clone(),
        &config.webhook,
        config.source.clone(),
        controller.subscribe(),
    )
    .await;
    let sources = stats::Sources {
        metrics: broker.ops.clone(),
        broker: broker.clone(),
        limits: limits.clone(),
        mqtt: Some(front.clients()),
        coaps: coaps_stats.clone(),
        bridges: Some(bridges.clone()),
        webhooks: Some(webhooks.clone()),
    };
    let readiness = health::Readiness::new();
    let listening = readiness.flag("listeners", Err("still starting".into()));
    {
        let store = broker.retained_stats().clone();
        readiness.add("store", move || {
            if store.closed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("the store is closed".into());
            }
            match &*store.failing.lock() {
                Some(e) => Err(format!("the last commit failed: {e}")),
                None => Ok(()),
            }
        });
        // In a cluster: connected to NATS, streams and buckets there, node name claimed,
        // the retained mirror in sync (issue 11, point 8). Always ready on a single node.
        if broker.backbone().clustered() {
            let backbone = broker.backbone().clone();
            readiness.add("backbone", move || match backbone.ready() {
                true => Ok(()),
                false => {
                    Err("not connected to NATS, or the retained mirror is not in sync yet".into())
                }
            });
        }
        let stopping = controller.signal();
        readiness.add("shutdown", move || match *stopping.borrow() {
            true => Err("shutting down".into()),
            false => Ok(()),
        });
    }
    let ops = (sources.clone(), readiness.clone());
    let mut tasks = vec![
        tokio::spawn(http::serve(
            http,
            broker.clone(),
            served.clone(),
            front.clone(),
            auth.clone(),
            limits.clone(),
            ops.clone(),
            controller.subscribe(),
        )),
        tokio::spawn(coap::serve(
            coap,
            broker.clone(),
            auth.clone(),
            config.clone(),
            limits.clone(),
            controller.subscribe(),
        )),
        tokio::spawn(mqtt::serve(mqtt, front.clone())),
        tokio::spawn(memory::trim_after_release(
            broker.budget().clone(),
            controller.subscribe(),
        )),
        tokio::spawn(stats::sys::run(
            broker.clone(),
            config.mqtt.sys_interval_secs,
            sources.clone(),
            controller.subscribe(),
        )),
    ];
    let also: Vec<String> = http_more
        .iter()
        .chain(&mqtt_more)
        .filter_map(|l| l.local_addr().ok())
        .chain(coap_more.iter().filter_map(|(u, _)| u.local_addr().ok()))
        .map(|a| a.to_string())
        .collect();
    for l in http_more {
        tasks.push(tokio::spawn(http::serve(
            l,
            broker.clone(),
            served.clone(),
            front.clone(),
            auth.clone(),
            limits.clone(),
            ops.clone(),
            controller.subscribe(),
        )));
    }
    for l in mqtt_more {
        tasks.push(tokio::spawn(mqtt::serve_also(l, front.clone())));
    }
    // CoAP over TCP, on the main address and on each further one.
    let coap_tcp_task = |listener| {
        tokio::spawn(coap::serve_tcp(
            listener,
            broker.clone(),
            auth.clone(),
            config.clone(),
            limits.clone(),
            controller.subscribe(),
        ))
    };
    for (udp, tcp) in coap_more {
        tasks.push(tokio::spawn(coap::serve(
            udp,
            broker.clone(),
            auth.clone(),
            config.clone(),
            limits.clone(),
            controller.subscribe(),
        )));
        if let Some(listener) = tcp {
            tasks.push(coap_tcp_task(listener));
        }
    }
    if let Some((l, _)) = metrics_listener {
        let state = http::AppState::new(broker.clone(), config.clone(), controller.subscribe())
            .with_auth(auth.clone())
            .with_ops(sources.clone(), readiness.clone());
        let guard = tls::HttpGuard {
            gate: limits.gate("http-metrics"),
            header_timeout: config.http.header_timeout(),
            body_deadline: config.http.body_deadline(),
            // Monitoring must stay reachable when the HTTP port is at its cap.
            slots: None,
            metrics: None,
        };
        tasks.push(tokio::spawn(tls::serve_http(
            l,
            http::ops_app(state),
            None,
            guard,
            controller.subscribe(),
            "HTTP/metrics",
        )));
    }
    if let Some(listener) = coap_tcp {
        tasks.push(coap_tcp_task(listener));
    }
    if let Some(ws) = ws {
        tasks.push(tokio::spawn(http::serve_mqtt_ws(ws, front.clone())));
    }
    if let Some(listener) = coaps {
        tasks.push(tokio::spawn(listener.serve(
            broker.clone(),
            auth.clone(),
            config.clone(),
            limits.clone(),
            controller.subscribe(),
        )));
    }
    let mut reloader = Reloader::new();
    reloader.add(auth.clone());
    reloader.add(bridges.clone());
    reloader.add(webhooks.clone());
    if let Some(tls) = &tls {
        reloader.add(tls.clone());
        if let Some((l, _, more)) = mqtts {
            tasks.push(tokio::spawn(mqtt::serve_tls(l, front.clone(), tls.clone())));
            for l in more {
                tasks.push(tokio::spawn(mqtt::serve_tls(l, front.clone(), tls.clone())));
            }
        }
        if let Some((l, _)) = https {
            let router = http::app(
                http::AppState::new(broker.clone(), served.clone(), controller.subscribe())
                    .with_auth(auth.clone())
                    .with_mqtt(front.clone())
                    .with_write_limits(limits.http.clone())
                    .with_ops(sources.clone(), readiness.clone()),
            );
            let guard = tls::HttpGuard {
                gate: limits.gate("https"),
                header_timeout: config.http.header_timeout(),
                body_deadline: config.http.body_deadline(),
                slots: limits.http_slots.clone(),
                metrics: Some(broker.ops.clone()),
            };
            tasks.push(tokio::spawn(tls::serve_http(
                l,
                router,
                Some(tls.clone()),
                guard,
                controller.subscribe(),
                "HTTPS",
            )));
        }
        if let Some((l, _)) = wss {
            tasks.push(tokio::spawn(http::serve_mqtt_wss(
                l,
                front.clone(),
                tls.clone(),
            )));
        }
    }
    let clients = front.clients();
    drop(front);
    let (users, acl_rules) = auth.loaded();
    let off = |what: &str| format!("off ({what})");
    let tls_off = |port_set: bool, key: &str| {
        if !port_set {
            off(&format!("no {key}"))
        } else {
            off("no certificate")
        }
    };
    tracing::info!(
        http = %http_addr,
        coap = %coap_addr,
        coaps = %coaps_addr.map(|a| a.to_string()).unwrap_or_else(|| off("no PSK file")),
        mqtt = %mqtt_addr,
        mqtt_ws = %mqtt_ws_addr.map(|a| a.to_string()).unwrap_or_else(|| format!("{http_addr}/mqtt")),
        mqtts = %mqtts_addr.map(|a| a.to_string()).unwrap_or_else(|| off("no certificate")),
        https = %https_addr.map(|a| a.to_string()).unwrap_or_else(|| tls_off(config.http.tls_port.is_some(), "http.tls_port")),
        mqtt_wss = %wss_addr.map(|a| a.to_string()).unwrap_or_else(|| tls_off(config.mqtt.wss_port.is_some(), "mqtt.wss_port")),
        metrics_port = %metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| off("no http.metrics_port")),
        also = %if also.is_empty() { "-".to_string() } else { also.join(" ") },
        store = %store_name,
        values_loaded = broker.retained_count(),
        anonymous = %if auth.anonymous_allowed() { "on" } else { "off" },
        users = %users.map_or_else(|| "none (no password file)".to_string(), |n| n.to_string()),
        acl_rules = %acl_rules.map_or_else(|| "none (no ACL file: everything allowed)".to_string(), |n| n.to_string()),
        "ponte listening"
    );
    listening.set(Ok(()));
    Ok(Gateway {
        http_addr,
        metrics_addr,
        readiness,
        sources,
        coap_addr,
        coaps_addr,
        coaps_stats,
        mqtt_addr,
        mqtt_ws_addr,
        mqtts_addr,
        https_addr,
        wss_addr,
        broker,
        auth,
        clients,
        limits,
        reloader,
        bridges,
        webhooks,
        controller,
        tasks,
    })
}

/// Whether a bind failed because the address does not exist on this machine (an IPv6
/// loopback where IPv6 is off, for a host name resolving to both families).
fn unavailable(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrNotAvailable
}

/// Bind the addresses after the first (already bound) on `port`; an address this machine
/// does not have is skipped with a warning, any other failure stops the start.
async fn bind_more(
    protocol: &'static str,
    addrs: &[SocketAddr],
    port: u16,
) -> Result<Vec<TcpListener>, Error> {
    let mut out = Vec::new();
    for a in addrs.iter().skip(1) {
        let addr = SocketAddr::new(a.ip(), port);
        match TcpListener::bind(addr).await {
            Ok(l) => out.push(l),
            Err(source) if unavailable(&source) => {
                tracing::warn!(%addr, error = %source, "{protocol} not listening on this address: not available here");
            }
            Err(source) => {
                return Err(Error::Bind {
                    protocol,
                    addr,
                    source,
                })
            }
        }
    }
    Ok(out)
}
