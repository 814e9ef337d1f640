//! The port guard: one nftables table of the agent's own
//! (`inet scanner_agent_guard`) that lets loopback and the allowed sources
//! reach a port and drops everyone else, replacing SiteRM's hand-typed
//! iptables steps. Data flow: [`config`] (`guard:` or the command line) ->
//! [`ruleset`] (the table as one netlink batch, and as nft text) ->
//! [`netlink`] (sent as one transaction: all or nothing).
//!
//! The table is never removed when the agent exits: a firewall must not
//! open up because a process stopped.

pub mod config;
pub mod netlink;
pub mod ruleset;

use std::net::IpAddr;

use ipnet::IpNet;

pub use self::config::GuardSettings;

pub const TABLE: &str = "scanner_agent_guard";

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "guarding port {port} could lock you out ({why}); pass --force (guard.force in the config) if that is meant"
    )]
    NeedsForce { port: u16, why: &'static str },
    #[error("port 0 cannot be guarded")]
    PortZero,
    #[error("{0:?} is not an address or CIDR range")]
    BadSource(String),
    #[error("nftables refused the batch (nothing was changed): {0}")]
    Refused(std::io::Error),
    #[error("cannot talk to nftables over netlink: {0} (the guard needs CAP_NET_ADMIN)")]
    Netlink(std::io::Error),
}

/// What the guard enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub port: u16,
    /// Sources allowed besides loopback.
    pub allow: Vec<IpNet>,
}

impl Guard {
    /// Checks a port and sources; `force` allows ports that could lock the
    /// operator or the agent's scrapers out (22, and `own_port`).
    pub fn new(
        port: u16,
        allow: &[String],
        own_port: u16,
        force: bool,
    ) -> Result<Self, GuardError> {
        if port == 0 {
            return Err(GuardError::PortZero);
        }
        if !force && port == 22 {
            return Err(GuardError::NeedsForce {
                port,
                why: "it is SSH",
            });
        }
        if !force && port == own_port {
            return Err(GuardError::NeedsForce {
                port,
                why: "it is the agent's own listening port",
            });
        }
        let allow = allow
            .iter()
            .map(|s| parse_source(s).ok_or_else(|| GuardError::BadSource(s.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { port, allow })
    }

    /// Installs or atomically replaces the table.
    pub fn apply(&self) -> Result<(), GuardError> {
        netlink::send(&ruleset::apply_batch(self))
    }
}

/// An address (a host route) or a CIDR range, with host bits cleared.
pub fn parse_source(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// Deletes the table if it is there.
pub fn remove() -> Result<(), GuardError> {
    netlink::send(&ruleset::remove_batch())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_that_can_lock_you_out_need_force() {
        let allow = ["198.18.0.1".to_owned()];
        assert!(matches!(
            Guard::new(22, &allow, 9919, false),
            Err(GuardError::NeedsForce { port: 22, .. })
        ));
        assert!(matches!(
            Guard::new(9919, &allow, 9919, false),
            Err(GuardError::NeedsForce { port: 9919, .. })
        ));
        assert!(Guard::new(22, &allow, 9919, true).is_ok());
        assert!(Guard::new(9100, &allow, 9919, false).is_ok());
        assert!(matches!(
            Guard::new(0, &allow, 9919, true),
            Err(GuardError::PortZero)
        ));
    }

    #[test]
    fn sources() {
        let g = Guard::new(
            9100,
            &[
                "198.18.0.1".into(),
                "198.18.1.7/24".into(),
                "2001:db8::1".into(),
                "2001:db8:1::/48".into(),
            ],
            9919,
            false,
        )
        .unwrap();
        let shown: Vec<String> = g.allow.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "198.18.0.1/32",
                "198.18.1.0/24",
                "2001:db8::1/128",
                "2001:db8:1::/48"
            ]
        );
        for bad in [
            "",
            "198.18.0.256",
            "198.18.0.0/33",
            "host.example",
            "2001:db8::/129",
        ] {
            assert!(
                matches!(
                    Guard::new(9100, &[bad.into()], 9919, false),
                    Err(GuardError::BadSource(_))
                ),
                "{bad}"
            );
        }
    }
}
