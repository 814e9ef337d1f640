//! Exclude files (`--exclude-file`, `scanning.exclude_file`): zmap's
//! blocklist format, one address, CIDR range or `first-last` range per
//! line, `#` starting a comment (on its own line or after the entry).
//! Read whole and checked before use: a bad line names the file and the
//! line, and nothing from the file is used.

use std::path::Path;

use crate::scan::targets;

/// Most entries one file may hold: a bound on what a file can make the
/// agent read and keep (entries are merged and applied in one sorted pass).
pub const MAX_ENTRIES: usize = 100_000;

/// The largest file read: room for the entries with comments, and a bound
/// on what a mistaken path (a log, a device) can make the agent read.
pub const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExcludeFileError {
    #[error("cannot read exclude file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "exclude file {path} line {line}: {text:?} is not an IP address, a CIDR range or a first-last range"
    )]
    Line {
        path: String,
        line: usize,
        text: String,
    },
    #[error("exclude file {path} has more than {MAX_ENTRIES} entries")]
    TooMany { path: String },
    #[error("exclude file {path} is larger than {} MiB", MAX_BYTES >> 20)]
    TooLarge { path: String },
}

/// Reads `path` and returns its entries as CIDR ranges.
pub fn read(path: &Path) -> Result<Vec<String>, ExcludeFileError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let failed = |e: std::io::Error| ExcludeFileError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_string(&mut text))
        .map_err(failed)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(ExcludeFileError::TooLarge { path: shown });
    }
    parse(&text, &shown)
}

/// The entries of a file's text (`path` only names it in errors), each as
/// CIDR ranges (a `first-last` range may take several).
pub fn parse(text: &str, path: &str) -> Result<Vec<String>, ExcludeFileError> {
    let mut out = Vec::new();
    let mut entries = 0;
    for (i, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let nets = targets::literal_networks(entry).ok_or_else(|| ExcludeFileError::Line {
            path: path.to_owned(),
            line: i + 1,
            text: entry.to_owned(),
        })?;
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(ExcludeFileError::TooMany {
                path: path.to_owned(),
            });
        }
        out.extend(nets.iter().map(ToString::to_string));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zmap_blocklists_read_with_comments_and_ranges() {
        let text = "# blocklist\n\n198.18.0.5\n198.18.1.0/24   # a lab\n  2001:db8::7  \n198.18.2.1-198.18.2.4\n";
        assert_eq!(
            parse(text, "x").unwrap(),
            [
                "198.18.0.5/32",
                "198.18.1.0/24",
                "2001:db8::7/128",
                "198.18.2.1/32",
                "198.18.2.2/31",
                "198.18.2.4/32"
            ]
        );
        assert_eq!(
            parse("# only comments\n\n", "x").unwrap(),
            Vec::<String>::new()
        );
    }

    fn line_error(text: &str) -> String {
        parse(text, "/etc/scanner-agent/exclude.txt")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_hostname_is_refused_with_file_and_line() {
        assert_eq!(
            line_error("198.18.0.1\n# c\nexample.org\n"),
            "exclude file /etc/scanner-agent/exclude.txt line 3: \"example.org\" is not an IP address, a CIDR range or a first-last range"
        );
    }

    #[test]
    fn a_bad_prefix_is_refused() {
        assert!(line_error("198.18.0.0/33").contains("line 1: \"198.18.0.0/33\""));
    }

    #[test]
    fn a_backward_range_is_refused() {
        assert!(line_error("\n198.18.0.9-198.18.0.1").contains("line 2:"));
    }

    #[test]
    fn a_mixed_family_range_is_refused() {
        assert!(line_error("198.18.0.1-2001:db8::1").contains("line 1:"));
    }

    #[test]
    fn two_entries_on_one_line_are_refused() {
        assert!(line_error("198.18.0.1 198.18.0.2").contains("line 1:"));
    }

    #[test]
    fn too_many_entries_are_refused() {
        let text = "198.18.0.1\n".repeat(MAX_ENTRIES + 1);
        assert_eq!(
            parse(&text, "big").unwrap_err(),
            ExcludeFileError::TooMany { path: "big".into() }
        );
        assert_eq!(
            parse(&"198.18.0.1\n".repeat(MAX_ENTRIES), "ok")
                .unwrap()
                .len(),
            MAX_ENTRIES
        );
    }

    #[test]
    fn an_endless_file_is_refused_after_its_bound() {
        assert_eq!(
            read(Path::new("/dev/zero")).unwrap_err().to_string(),
            "exclude file /dev/zero is larger than 16 MiB"
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = read(Path::new("/nonexistent/exclude.txt")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read exclude file /nonexistent/exclude.txt: "),
            "{e}"
        );
    }
}

#[cfg(test)]
mod bound {
    use super::*;
    use crate::scan::targets::{TargetSet, TargetSpec};

    /// The worst case the entry bound allows: every entry cuts a hole in
    /// the targets. Applying it stays well within a scan's start-up, even
    /// unoptimised.
    #[test]
    fn the_largest_file_applies_quickly() {
        let base = u128::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
        let text: String = (0..MAX_ENTRIES as u128)
            .map(|i| format!("{}\n", std::net::Ipv6Addr::from(base + 2 * i)))
            .collect();
        let started = std::time::Instant::now();
        let mut spec = TargetSpec::new(vec!["2001:db8::/110".into()]);
        spec.max_v6_prefix = 110;
        spec.exclude = parse(&text, "big").unwrap();
        let set = TargetSet::build(&spec).unwrap();
        let took = started.elapsed();
        assert_eq!(set.len(), (1 << 18) - MAX_ENTRIES as u64);
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    }
}
