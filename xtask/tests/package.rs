//! `cargo xtask package --binary`: the .deb and .rpm hold the right files
//! with the right owners and modes, mark the config as a kept conffile,
//! create the service user, and carry the given binary byte for byte.
//! Inspected with the distributions' own tools (dpkg-deb, rpm).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// A small real ELF stands in for the agent: packaging does not look
/// inside it beyond its glibc version, and a release build would take
/// minutes. `echo` prints its arguments, so each generated file (man page,
/// completions) shows which command of the packaged binary produced it
/// (the real agent's output is tested in scanner-agent's `docs` test).
const STAND_IN: &str = "/usr/bin/echo";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A command's output; it must succeed.
fn output(program: &str, args: &[&str]) -> String {
    String::from_utf8(testbed::sh(program, args).stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    output("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn package(out: &Path) -> (PathBuf, PathBuf) {
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["package", "--binary", STAND_IN, "--out-dir"])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "xtask package failed");
    let version = env!("CARGO_PKG_VERSION");
    let deb = out.join(format!("scanner-agent_{version}_amd64.deb"));
    let rpm = out.join(format!("scanner-agent-{version}-1.x86_64.rpm"));
    assert!(
        deb.is_file() && rpm.is_file(),
        "packages missing in {out:?}"
    );
    (deb, rpm)
}

/// The installed files both packages share, with their modes.
const COMMON: &[(&str, &str)] = &[
    ("-rwxr-xr-x", "/usr/bin/scanner-agent"),
    ("-rw-r-----", "/etc/scanner-agent/config.yaml"),
    ("-rw-r--r--", "/usr/share/doc/scanner-agent/README.md"),
    ("-rw-r--r--", "/usr/share/doc/scanner-agent/copyright"),
    (
        "-rw-r--r--",
        "/usr/share/scanner-agent/prometheus/prometheus.yml",
    ),
    (
        "-rw-r--r--",
        "/usr/share/scanner-agent/prometheus/alerts.yml",
    ),
    (
        "-rw-r--r--",
        "/usr/share/scanner-agent/prometheus/alerts.test.yml",
    ),
    (
        "-rw-r--r--",
        "/usr/share/scanner-agent/prometheus/host-view.yml",
    ),
    (
        "-rw-r--r--",
        "/usr/share/scanner-agent/prometheus/host-view.test.yml",
    ),
    (
        "-rw-r--r--",
        "/usr/share/scanner-agent/grafana/scanner-agent.json",
    ),
    ("-rw-r--r--", "/usr/share/man/man1/scanner-agent.1"),
    (
        "-rw-r--r--",
        "/usr/share/bash-completion/completions/scanner-agent",
    ),
    (
        "-rw-r--r--",
        "/usr/share/fish/vendor_completions.d/scanner-agent.fish",
    ),
];

/// The generated files: installed path (zsh's differs per distribution)
/// and what the packaged binary printed for them (`echo <args>`).
fn generated(zsh_dir: &str) -> [(String, &'static str); 4] {
    [
        ("/usr/share/man/man1/scanner-agent.1".into(), "manpage\n"),
        (
            "/usr/share/bash-completion/completions/scanner-agent".into(),
            "completions bash\n",
        ),
        (format!("{zsh_dir}/_scanner-agent"), "completions zsh\n"),
        (
            "/usr/share/fish/vendor_completions.d/scanner-agent.fish".into(),
            "completions fish\n",
        ),
    ]
}

#[test]
fn packages_hold_the_agent_its_unit_config_and_scripts() {
    let tmp = TempDir::new("package");
    let (deb, rpm) = package(&tmp.0);
    check_deb(&deb, &tmp.0.join("deb-tree"));
    check_rpm(&rpm);
}

fn check_deb(deb: &Path, tree: &Path) {
    let deb_s = deb.to_str().unwrap();
    let field = |name: &str| output("dpkg-deb", &["-f", deb_s, name]).trim().to_owned();
    assert_eq!(field("Package"), "scanner-agent");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), "amd64");
    let depends = field("Depends");
    assert!(
        depends.starts_with("libc6 (>= 2.") && depends.ends_with("), passwd"),
        "{depends}"
    );

    // `dpkg-deb -c`: mode, owner/group, size, date, time, path.
    let listing: BTreeSet<(String, String, String)> = output("dpkg-deb", &["-c", deb_s])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[5].trim_start_matches('.').to_owned(),
            )
        })
        .filter(|(mode, ..)| !mode.starts_with('d'))
        .collect();
    let mut expected: BTreeSet<(String, String, String)> = COMMON
        .iter()
        .map(|(m, p)| (m.to_string(), "root/root".into(), p.to_string()))
        .collect();
    expected.insert((
        "-rw-r--r--".into(),
        "root/root".into(),
        "/lib/systemd/system/scanner-agent.service".into(),
    ));
    expected.insert((
        "-rw-r--r--".into(),
        "root/root".into(),
        "/usr/share/zsh/vendor-completions/_scanner-agent".into(),
    ));
    assert_eq!(listing, expected);

    let control = tree.join("DEBIAN");
    fs::create_dir_all(&control).unwrap();
    output("dpkg-deb", &["-e", deb_s, control.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/scanner-agent/config.yaml\n"
    );
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    for needed in [
        "useradd --system --gid scanner-agent",
        "chown root:scanner-agent /etc/scanner-agent/config.yaml",
        "install -d -o scanner-agent -g scanner-agent -m 0750 /var/lib/scanner-agent",
        "if [ -d /run/systemd/system ]; then\n        systemctl daemon-reload",
    ] {
        assert!(
            postinst.contains(needed),
            "postinst lacks {needed:?}:\n{postinst}"
        );
    }
    let prerm = fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        prerm.contains("disable --now scanner-agent.service"),
        "{prerm}"
    );

    output("dpkg-deb", &["-x", deb_s, tree.to_str().unwrap()]);
    for (installed, source) in [
        ("usr/bin/scanner-agent", Path::new(STAND_IN).to_path_buf()),
        ("etc/scanner-agent/config.yaml", repo("configs/config.yaml")),
        (
            "lib/systemd/system/scanner-agent.service",
            repo("configs/systemd/scanner-agent.service"),
        ),
        (
            "usr/share/scanner-agent/prometheus/alerts.yml",
            repo("configs/prometheus/alerts.yml"),
        ),
        (
            "usr/share/scanner-agent/prometheus/host-view.yml",
            repo("configs/prometheus/host-view.yml"),
        ),
    ] {
        assert_eq!(
            fs::read(tree.join(installed)).unwrap(),
            fs::read(&source).unwrap(),
            "{installed} differs from {source:?}"
        );
    }
    // The man page and completions are what the packaged binary printed.
    for (installed, printed) in generated("/usr/share/zsh/vendor-completions") {
        assert_eq!(
            fs::read_to_string(tree.join(installed.trim_start_matches('/'))).unwrap(),
            printed,
            "{installed}"
        );
    }
}

fn check_rpm(rpm: &Path) {
    let rpm_s = rpm.to_str().unwrap();
    let query = |format: &str| output("rpm", &["-qp", "--qf", format, rpm_s]);
    assert_eq!(
        query("%{NAME} %{VERSION} %{RELEASE} %{ARCH}"),
        format!("scanner-agent {} 1 x86_64", env!("CARGO_PKG_VERSION"))
    );
    // Digests of header and payload check out.
    let verify = output("rpm", &["-Kv", "--nosignature", rpm_s]);
    assert_eq!(verify.matches("digest: OK").count(), 3, "{verify}");

    let files: BTreeSet<String> = query(
        "[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILEUSERNAME}:%{FILEGROUPNAME}|%{FILENAMES}\n]",
    )
    .lines()
    .filter(|l| !l.contains("|d"))
    .map(str::to_owned)
    .collect();
    let mut expected: BTreeSet<String> = COMMON
        .iter()
        .map(|(mode, path)| {
            let (flags, owner) = match *path {
                "/etc/scanner-agent/config.yaml" => ("cn", "root:scanner-agent"),
                p if p.starts_with("/usr/share/doc/") || p.starts_with("/usr/share/man/") => {
                    ("d", "root:root")
                }
                _ => ("", "root:root"),
            };
            format!("{flags}|{mode}|{owner}|{path}")
        })
        .collect();
    expected.insert("|-rw-r--r--|root:root|/usr/lib/systemd/system/scanner-agent.service".into());
    expected.insert("|-rw-r--r--|root:root|/usr/share/zsh/site-functions/_scanner-agent".into());
    assert_eq!(files, expected);
    let dirs = query("[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]");
    assert!(
        dirs.lines()
            .any(|l| l == "drwxr-x--- scanner-agent:scanner-agent /var/lib/scanner-agent"),
        "{dirs}"
    );
    assert_eq!(
        output("rpm", &["-qcp", rpm_s]),
        "/etc/scanner-agent/config.yaml\n"
    );

    // The packaged binary is the one given.
    let dump = output("rpm", &["-qp", "--dump", rpm_s]);
    let agent = dump
        .lines()
        .find(|l| l.starts_with("/usr/bin/scanner-agent "))
        .unwrap_or_else(|| panic!("{dump}"));
    assert_eq!(
        agent.split_whitespace().nth(3),
        Some(sha256(Path::new(STAND_IN)).as_str())
    );
    // And the generated files are what it printed.
    for (installed, printed) in generated("/usr/share/zsh/site-functions") {
        let line = dump
            .lines()
            .find(|l| l.starts_with(&format!("{installed} ")))
            .unwrap_or_else(|| panic!("no {installed} in {dump}"));
        let size = printed.len().to_string();
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(size.as_str()),
            "{line}"
        );
    }

    let scripts = output("rpm", &["-qp", "--scripts", rpm_s]);
    let pre = scripts
        .split("postinstall scriptlet")
        .next()
        .unwrap_or_default();
    assert!(pre.starts_with("preinstall scriptlet"), "{scripts}");
    assert!(
        pre.contains("useradd --system --gid scanner-agent"),
        "{scripts}"
    );
    for needed in [
        "systemctl daemon-reload",
        "if [ \"$1\" -eq 0 ]; then",
        "disable --now scanner-agent.service",
        "systemctl try-restart scanner-agent.service",
    ] {
        assert!(scripts.contains(needed), "no {needed:?} in:\n{scripts}");
    }
    let requires = output("rpm", &["-qp", "--requires", rpm_s]);
    assert!(
        requires.lines().any(|l| l.starts_with("glibc >= 2.")),
        "{requires}"
    );
    assert!(requires.lines().any(|l| l == "shadow-utils"), "{requires}");
}

#[test]
fn a_missing_binary_is_named() {
    let tmp = TempDir::new("package-missing");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "package",
            "--binary",
            "/nonexistent/scanner-agent",
            "--out-dir",
        ])
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--binary /nonexistent/scanner-agent: no such file"),
        "{stderr}"
    );
}
