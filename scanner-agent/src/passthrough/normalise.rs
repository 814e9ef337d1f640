//! The `node_exporter` value of SiteRM's `main.yaml` as a URL: `http://`
//! when there is no scheme, `/metrics` when the path does not end with it,
//! done with a real URL parser (the original took `httpbox:9100` for a URL
//! with scheme `httpbox` and turned `host:9100/` into `host:9100//metrics`).

use url::Url;

/// Normalises a `node_exporter` value; the error says what is wrong with it.
pub fn node_exporter_url(value: &str) -> Result<Url, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("empty node_exporter URL".into());
    }
    // Only "scheme://" counts as a scheme: "host:9100" is a host and a port.
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let mut url =
        Url::parse(&with_scheme).map_err(|e| format!("{value:?} is not a usable URL: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "{value:?}: https is not supported; node_exporter is fetched over plain HTTP on the internal network (guard its port instead)"
            ));
        }
        other => return Err(format!("{value:?}: scheme {other:?} is not http")),
    }
    if url.host().is_none() {
        return Err(format!("{value:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{value:?} carries credentials; they would be sent to the exporter and logged"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{value:?} has a query or fragment; only a host, a port and a path are accepted"
        ));
    }
    if !url.path().ends_with("/metrics") {
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{path}/metrics"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str) -> String {
        node_exporter_url(value)
            .unwrap_or_else(|e| panic!("{value}: {e}"))
            .to_string()
    }

    #[test]
    fn the_seeds_examples() {
        assert_eq!(ok("localhost:9100"), "http://localhost:9100/metrics");
        assert_eq!(ok("http://127.0.0.1:9100"), "http://127.0.0.1:9100/metrics");
        assert_eq!(
            ok("http://127.0.0.1:9100/metrics"),
            "http://127.0.0.1:9100/metrics"
        );
    }

    #[test]
    fn edge_cases_the_original_got_wrong() {
        assert_eq!(ok("httpbox:9100"), "http://httpbox:9100/metrics");
        assert_eq!(ok("host:9100/"), "http://host:9100/metrics");
        assert_eq!(ok("http://host:9100/"), "http://host:9100/metrics");
        assert_eq!(ok("https-gw:9100"), "http://https-gw:9100/metrics");
    }

    #[test]
    fn paths_ports_and_addresses() {
        assert_eq!(
            ok("  dtn1.example.org  "),
            "http://dtn1.example.org/metrics"
        );
        assert_eq!(ok("host:9100/node"), "http://host:9100/node/metrics");
        assert_eq!(ok("host:9100/node/"), "http://host:9100/node/metrics");
        assert_eq!(ok("198.18.0.2:9100"), "http://198.18.0.2:9100/metrics");
        assert_eq!(
            ok("[2001:db8::2]:9100"),
            "http://[2001:db8::2]:9100/metrics"
        );
        assert_eq!(ok("HTTP://Host:9100"), "http://host:9100/metrics");
        // The default port is the scheme's, as for any URL.
        assert_eq!(ok("http://host:80/metrics"), "http://host/metrics");
    }

    #[test]
    fn rejections() {
        for (value, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("https://host:9100", "https is not supported"),
            ("ftp://host/metrics", "scheme \"ftp\""),
            ("file:///etc/passwd", "scheme \"file\""),
            ("http://user:pw@host:9100", "credentials"),
            ("user@host:9100", "credentials"),
            ("host:9100/metrics?collect[]=cpu", "query"),
            ("host:9100/#x", "query or fragment"),
            ("host:99999", "not a usable URL"),
            ("http://", "not a usable URL"),
            ("host name:9100", "not a usable URL"),
        ] {
            let e = node_exporter_url(value).expect_err(value);
            assert!(e.contains(says), "{value:?}: {e}");
        }
    }
}
