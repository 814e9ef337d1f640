//! The prometheus-client collector: at a scrape it reads the host view
//! unless the last read is younger than [`MAX_AGE`], and encodes the
//! `host_*` families. A failed read gives `host_listening_scrape_success
//! 0` and nothing else of this view, never a failed scrape.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
    registry::Registry,
};

use super::{
    HostError, READ_TIME, addresses,
    sockets::{self},
    view::{self, View},
};

/// How long a read is served from the cache: listeners change at the pace
/// of service restarts, and Prometheus scrapes every agent every 15 s to
/// 60 s, so a scrape shows the host as it was at most this long ago while
/// concurrent and repeated scrapes cost one read.
pub(super) const MAX_AGE: Duration = Duration::from_secs(5);

/// A failure is logged again after this long, not at every scrape.
const REPEAT_ERROR_AFTER: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListeningLabels {
    ip: String,
    port: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    interface: String,
    ip: String,
}

#[derive(Debug, Default)]
struct Cache {
    /// The last read, when it was made.
    last: Option<(Instant, Result<Arc<View>, String>)>,
    /// The last failure logged, and when.
    logged: Option<(String, Instant)>,
}

/// The host view's collector; clones share one cache.
#[derive(Clone, Debug)]
pub struct HostView {
    /// The lock also keeps concurrent scrapes from reading twice at once.
    cache: Arc<Mutex<Cache>>,
    /// [`read`], or a stand-in in the unit tests.
    read: fn() -> Result<View, HostError>,
}

impl Default for HostView {
    fn default() -> Self {
        Self {
            cache: Arc::default(),
            read,
        }
    }
}

impl HostView {
    /// The families' names, in the order they are encoded (the listener
    /// and address families only after a successful read).
    pub const FAMILIES: [&str; 4] = [
        "host_listening_port_info",
        "host_address_info",
        "host_listening_series_dropped",
        "host_listening_scrape_success",
    ];

    /// Registers the host view in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let view = Self::default();
        registry.register_collector(Box::new(view.clone()));
        view
    }

    /// The view as of at most [`MAX_AGE`] ago, read now if older.
    fn current(&self) -> Result<Arc<View>, String> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, last)) = &cache.last
            && at.elapsed() < MAX_AGE
        {
            return last.clone();
        }
        let read = (self.read)().map(Arc::new).map_err(|e| e.to_string());
        match &read {
            Ok(_) => {
                if cache.logged.take().is_some() {
                    tracing::info!("host view: reading sockets and addresses works again");
                }
            }
            Err(message) => {
                let repeat = cache
                    .logged
                    .as_ref()
                    .is_some_and(|(m, at)| m == message && at.elapsed() < REPEAT_ERROR_AFTER);
                if !repeat {
                    tracing::warn!("host view: read failed: {message}");
                    cache.logged = Some((message.clone(), Instant::now()));
                }
            }
        }
        cache.last = Some((Instant::now(), read.clone()));
        read
    }
}

/// One read of sockets and addresses.
fn read() -> Result<View, HostError> {
    let deadline = Instant::now() + READ_TIME;
    let (addresses, addresses_left_out) = addresses::read(deadline)?;
    let (bindings, bindings_left_out) = sockets::read(deadline)?;
    Ok(view::build(
        &bindings,
        &addresses,
        addresses_left_out + bindings_left_out,
    ))
}

fn label(ip: &IpAddr) -> String {
    ip.to_string()
}

impl Collector for HostView {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let [listening, addresses, dropped, success] = Self::FAMILIES;
        let view = self.current();
        if let Ok(view) = &view {
            let mut family = encoder.encode_descriptor(
                listening,
                "A TCP socket listening, or a UDP socket bound and not connected, on this host's address ip (a wildcard bind gives one series per address it accepts)",
                None,
                MetricType::Gauge,
            )?;
            for (ip, port, protocol) in &view.listening {
                ConstGauge::new(1i64).encode(family.encode_family(&ListeningLabels {
                    ip: label(ip),
                    port: port.to_string(),
                    protocol: (*protocol).to_owned(),
                })?)?;
            }
            let mut family = encoder.encode_descriptor(
                addresses,
                "An address of this host (not loopback or link-local), with its interface",
                None,
                MetricType::Gauge,
            )?;
            for (interface, ip) in &view.addresses {
                ConstGauge::new(1i64).encode(family.encode_family(&AddressLabels {
                    interface: interface.clone(),
                    ip: label(ip),
                })?)?;
            }
            let g = ConstGauge::new(i64::try_from(view.dropped).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(
                dropped,
                "host_listening_port_info and host_address_info series left out of the last read at their caps",
                None,
                g.metric_type(),
            )?)?;
        }
        let g = ConstGauge::new(i64::from(view.is_ok()));
        g.encode(encoder.encode_descriptor(
            success,
            "Whether the last read of this host's sockets and addresses (sock_diag and rtnetlink) succeeded",
            None,
            g.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};

    use super::*;

    /// The dumps need no privilege: this runs as any user, on the real
    /// host, sending nothing anywhere.
    #[test]
    fn a_read_of_this_host_sees_its_sockets_but_not_loopback() {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let (tcp_port, udp_port) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let (bindings, left_out) = sockets::read(Instant::now() + READ_TIME).unwrap();
        assert_eq!(left_out, 0);
        assert!(
            bindings
                .iter()
                .any(|b| b.protocol == "udp" && b.port == udp_port && b.address.is_unspecified())
        );
        let view = read().unwrap();
        assert!(
            !view.listening.iter().any(|(_, port, _)| *port == tcp_port),
            "loopback shown"
        );
        for (ip, _, _) in &view.listening {
            assert!(view::shown(*ip), "{ip}");
        }
        // The UDP wildcard is on every shown IPv4 address.
        for (_, ip) in view.addresses.iter().filter(|(_, ip)| ip.is_ipv4()) {
            assert!(view.listening.contains(&(*ip, udp_port, "udp")), "{ip}");
        }
    }

    /// A failed read is one gauge at 0, and the scrape goes on.
    #[test]
    fn a_failed_read_is_success_0_not_a_failed_scrape() {
        let failing = HostView {
            cache: Arc::default(),
            read: || {
                Err(HostError::Socket {
                    what: "sock_diag",
                    source: std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
                })
            },
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(failing));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("host_listening_scrape_success 0"), "{text}");
        assert!(!text.contains("host_listening_port_info"), "{text}");
        assert!(!text.contains("host_address_info"), "{text}");
    }

    #[test]
    fn a_second_scrape_within_the_age_is_served_from_the_cache() {
        let host = HostView::default();
        let first = host.current().unwrap();
        let second = host.current().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}
