//! Service names from `/etc/services` (Debian's `netbase`): names given to
//! `-p` (`-p ssh,https`) become ports, and ports in the XML output get
//! nmap's `<service name>`. Read when needed, never required otherwise.

use std::{collections::HashMap, path::Path};

use crate::scan::probes::Protocol;

/// Where the system keeps its service names.
pub const SERVICES_FILE: &str = "/etc/services";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error(
        "cannot read {path} to resolve the service name {name:?} ({reason}); install netbase, or give the port number"
    )]
    Unreadable {
        path: String,
        name: String,
        reason: String,
    },
    #[error("unknown service name {name:?}: {path} has no {protocols} service of that name")]
    Unknown {
        name: String,
        path: String,
        protocols: String,
    },
}

/// The name <-> port tables of one services file.
#[derive(Debug, Default)]
pub struct Services {
    /// Lowercased name or alias -> (protocol, port).
    by_name: HashMap<String, Vec<(Protocol, u16)>>,
    /// (protocol, port) -> the file's first (official) name for it.
    by_port: HashMap<(Protocol, u16), String>,
}

impl Services {
    /// Parses the `name port/protocol [aliases...] [# comment]` lines;
    /// lines it cannot read, and protocols the agent does not scan, are
    /// skipped (the file belongs to the system, not to the agent).
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let protocol = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            s.by_port
                .entry((protocol, port))
                .or_insert_with(|| name.to_owned());
            for n in std::iter::once(name).chain(words) {
                let entry = s.by_name.entry(n.to_ascii_lowercase()).or_default();
                if !entry.contains(&(protocol, port)) {
                    entry.push((protocol, port));
                }
            }
        }
        s
    }

    /// The system's table, or `None` if it cannot be read.
    pub fn system() -> Option<Self> {
        std::fs::read_to_string(SERVICES_FILE)
            .ok()
            .map(|t| Self::parse(&t))
    }

    /// The name of a port, as nmap's `<service name>` gives it.
    pub fn name_of(&self, protocol: Protocol, port: u16) -> Option<&str> {
        self.by_port.get(&(protocol, port)).map(String::as_str)
    }

    /// The ports `name` stands for in any of `protocols` (case-insensitive;
    /// aliases count).
    fn ports_of(&self, name: &str, protocols: &[Protocol]) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .by_name
            .get(&name.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter(|(p, _)| protocols.contains(p))
            .map(|&(_, port)| port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// Rewrites the names in a `-p` spec (any token with a letter in it) to
/// port numbers for `protocols`, reading the services file at `path` only
/// if there is a name to resolve. Numbers and ranges pass unchanged.
pub fn resolve_names(
    spec: &str,
    protocols: &[Protocol],
    path: &Path,
) -> Result<String, ServiceError> {
    if !spec.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Ok(spec.to_owned());
    }
    let mut table: Option<Services> = None;
    let mut out = Vec::new();
    for token in spec.split(',') {
        let name = token.trim();
        if !name.bytes().any(|b| b.is_ascii_alphabetic()) {
            out.push(token.to_owned());
            continue;
        }
        let services = match &mut table {
            Some(t) => t,
            None => {
                let text = std::fs::read_to_string(path).map_err(|e| ServiceError::Unreadable {
                    path: path.display().to_string(),
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?;
                table.insert(Services::parse(&text))
            }
        };
        let ports = services.ports_of(name, protocols);
        if ports.is_empty() {
            return Err(ServiceError::Unknown {
                name: name.to_owned(),
                path: path.display().to_string(),
                protocols: protocols
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        out.extend(ports.iter().map(u16::to_string));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Network services, Internet style
tcpmux		1/tcp				# TCP port service multiplexer
ssh		22/tcp				# SSH Remote Login Protocol
domain		53/tcp
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
https		443/tcp
ntp		123/udp				# Network Time Protocol
gsiftp		2811/tcp
sctp-only	9/sctp
broken line
";

    /// A services file of `text`, removed when dropped.
    struct File(std::path::PathBuf);

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> (File, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("scanner-agent-services-{}-{n}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        (File(path.clone()), path)
    }

    #[test]
    fn names_become_ports_for_the_scanned_protocols() {
        let (_d, path) = file(SAMPLE);
        let tcp = [Protocol::Tcp];
        assert_eq!(
            resolve_names("ssh,HTTPS,2811,8000-8010", &tcp, &path).unwrap(),
            "22,443,2811,8000-8010"
        );
        assert_eq!(resolve_names("www", &tcp, &path).unwrap(), "80", "aliases");
        assert_eq!(
            resolve_names("ntp", &[Protocol::Udp], &path).unwrap(),
            "123"
        );
        assert_eq!(
            resolve_names("domain,ntp", &[Protocol::Tcp, Protocol::Udp], &path).unwrap(),
            "53,123"
        );
    }

    #[test]
    fn a_name_of_another_protocol_or_none_is_refused() {
        let (_d, path) = file(SAMPLE);
        let e = resolve_names("22,ntp", &[Protocol::Tcp], &path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "unknown service name \"ntp\": {} has no tcp service of that name",
                path.display()
            )
        );
        assert!(matches!(
            resolve_names("nosuchservice", &[Protocol::Tcp], &path),
            Err(ServiceError::Unknown { .. })
        ));
        assert!(matches!(
            resolve_names("sctp-only", &[Protocol::Tcp, Protocol::Udp], &path),
            Err(ServiceError::Unknown { .. })
        ));
    }

    #[test]
    fn numbers_never_read_the_file_and_a_missing_file_is_named() {
        let missing = Path::new("/nonexistent/services");
        assert_eq!(
            resolve_names("22,80-90", &[Protocol::Tcp], missing).unwrap(),
            "22,80-90"
        );
        let e = resolve_names("ssh", &[Protocol::Tcp], missing).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "cannot read /nonexistent/services to resolve the service name \"ssh\""
            ) && e.to_string().contains("install netbase"),
            "{e}"
        );
    }

    #[test]
    fn ports_are_named_by_the_first_name_of_their_protocol() {
        let s = Services::parse(SAMPLE);
        assert_eq!(s.name_of(Protocol::Tcp, 80), Some("http"));
        assert_eq!(s.name_of(Protocol::Udp, 53), Some("domain"));
        assert_eq!(s.name_of(Protocol::Udp, 22), None);
    }
}
