//! nmap's output files from `scan` (`-oA`, `-oX`, `--format xml`), read by
//! nmap's own tools: `xmllint` validates the XML against nmap's DTD, and
//! `ndiff` between two scans of a testbed whose listeners changed reports
//! exactly that change. NDJSON records carry the reply's TTL.
mod common;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use common::{Lab, agent};

/// nmap's DTD, from Debian's `nmap-common` (installed by `cargo xtask test`).
const DTD: &str = "/usr/share/nmap/nmap.dtd";

fn t(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("scanner-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scan of ports 20-30, 80 and 443 (the last two by their names in
/// /etc/services) of three addresses (the third one absent), with fast
/// retry timing; returns its standard output.
fn scan(lab: &Lab, extra: &[&str]) -> String {
    let out = lab
        .scanner
        .command(agent())
        .args(["scan", "-p", "20-30,http,https"])
        .args(["--initial-rtt-timeout", "100", "--max-rtt-timeout", "200"])
        .args(["--max-retries", "1", "--wait", "0.3"])
        .args(extra)
        .args(["198.18.0.2", "198.18.0.3", "198.18.0.4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scan failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn xmllint_valid(file: &str) {
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--dtdvalid", DTD, file])
        .output()
        .expect("xmllint (libxml2-utils) is installed by cargo xtask test");
    assert!(
        out.status.success(),
        "{file} is not valid against {DTD}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// The open (ip, port) pairs of NDJSON text; every record has the TTL the
/// target's replies arrive with (64: Linux's default, no router between).
fn open_ports(ndjson: &str) -> BTreeSet<(String, u64)> {
    ndjson
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .inspect(|v| assert_eq!(v["ttl"], 64, "{v}"))
        .filter(|v| v["state"] == "open")
        .map(|v| {
            (
                v["ip"].as_str().unwrap().to_owned(),
                v["port"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn xml_is_valid_nmap_xml_and_ndiff_reports_exactly_the_change() {
    testbed::require_root!();
    assert!(
        Path::new(DTD).exists(),
        "{DTD} missing: install nmap-common"
    );
    let lab = Lab::new(&[t(2), t(3)], 1500);
    let mut listeners = lab.target.listen(&[(t(2), 22), (t(2), 443), (t(3), 80)]);
    let dir = Scratch::new("oa");
    let base = dir.path("first");

    // -oA: three files, and the terminal keeps the human text.
    let text = scan(&lab, &["-oA", &base]);
    let nmap = std::fs::read_to_string(format!("{base}.nmap")).unwrap();
    let body: Vec<&str> = nmap.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(body, text.lines().collect::<Vec<_>>(), "{nmap}");
    assert!(nmap.starts_with("# scanner-agent "), "{nmap}");
    assert_eq!(text.lines().count(), 3, "{text}");
    let json = std::fs::read_to_string(format!("{base}.json")).unwrap();
    let expected: BTreeSet<(String, u64)> =
        [("198.18.0.2", 22), ("198.18.0.2", 443), ("198.18.0.3", 80)]
            .iter()
            .map(|&(ip, p)| (ip.to_owned(), p))
            .collect();
    assert_eq!(open_ports(&json), expected);
    let first = format!("{base}.xml");
    xmllint_valid(&first);
    let xml = std::fs::read_to_string(&first).unwrap();
    assert!(
        xml.contains(r#"<state state="open" reason="syn-ack" reason_ttl="64"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<hosts up="2" down="1" total="3"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<scaninfo type="syn" protocol="tcp" numservices="13" services="20-30,80,443"/>"#
        ),
        "{xml}"
    );
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        3,
        "no temporary file left"
    );

    // The listeners change: 443 on .2 closes, 25 on .3 opens.
    listeners.remove(1);
    listeners.extend(lab.target.listen(&[(t(3), 25)]));
    let second = dir.path("second.xml");
    let stdout = scan(&lab, &["--format", "xml", "-oX", &second]);
    assert_eq!(stdout, std::fs::read_to_string(&second).unwrap());
    xmllint_valid(&second);

    let out = std::process::Command::new("ndiff")
        .args([&first, &second])
        .output()
        .expect("ndiff is installed by cargo xtask test");
    let diff = String::from_utf8_lossy(&out.stdout).into_owned();
    // ndiff exits 1 when the scans differ (0: same, 2: error).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{diff}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes: Vec<String> = diff
        .lines()
        .filter(|l| l.starts_with(['+', '-']) && !l[1..].starts_with("Nmap"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        changes,
        ["-443/tcp open https", "+25/tcp open smtp"],
        "{diff}"
    );
    // A scan compared with itself: no difference.
    let same = std::process::Command::new("ndiff")
        .args([&second, &second])
        .status()
        .unwrap();
    assert_eq!(same.code(), Some(0));
}
