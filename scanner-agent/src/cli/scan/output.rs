//! nmap's output flags for `scan`: `-oX FILE` (nmap's XML), `-oN FILE` (the
//! human text), `-oJ FILE` (NDJSON), `-oA BASE` (all three, as BASE.xml,
//! BASE.nmap and BASE.json). clap has no two-letter short flags, so
//! [`nmap_argv`] rewrites them to `--output-xml`, `--output-normal`,
//! `--output-json` and `--output-all` before clap reads the command line.
//! Each file is written whole or not at all (a temporary file in the same
//! directory, synced, then renamed over the name).

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// The long flag each nmap output letter stands for.
const LETTERS: [(u8, &str); 4] = [
    (b'X', "--output-xml"),
    (b'N', "--output-normal"),
    (b'J', "--output-json"),
    (b'A', "--output-all"),
];

/// The hidden flag an nmap output the agent does not write (`-oG`, `-oS`,
/// `-oM`, `-oH`) turns into, so the scan command can say so clearly.
pub(super) const UNSUPPORTED_FLAG: &str = "--nmap-output-unsupported";

/// Rewrites nmap's `-oX FILE` (and `-oXFILE`) style flags to their long
/// forms; everything after `--` is left alone.
pub(crate) fn nmap_argv(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest || arg == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let bytes = arg.as_encoded_bytes();
        if bytes.len() >= 3 && bytes.starts_with(b"-o") && bytes[2].is_ascii_uppercase() {
            let value = String::from_utf8_lossy(&bytes[3..]).into_owned();
            let long = LETTERS
                .iter()
                .find(|(l, _)| *l == bytes[2])
                .map(|(_, f)| *f);
            match long {
                Some(flag) if value.is_empty() => out.push(flag.into()),
                Some(flag) => out.push(format!("{flag}={value}").into()),
                None => out.push(format!("{UNSUPPORTED_FLAG}={}", char::from(bytes[2])).into()),
            }
            continue;
        }
        out.push(arg);
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OutputError {
    #[error(
        "-o{0} (nmap's {1} output) is not supported: use -oX (XML), -oN (text), -oJ (NDJSON) or -oA"
    )]
    Unsupported(char, &'static str),
    #[error("-oA {base} already writes {what} to {path}; give -oA or -o{letter}, not both")]
    Twice {
        base: String,
        what: &'static str,
        path: String,
        letter: char,
    },
    #[error("{path} is named by two outputs; give each its own file")]
    SameFile { path: String },
    #[error(
        "-o{letter} -: standard output carries the terminal's results; use --format {format} instead"
    )]
    Stdout { letter: char, format: &'static str },
    #[error("-o{letter} needs a file name")]
    Empty { letter: char },
    #[error("cannot write {path}: {dir} is not a directory")]
    NoDirectory { path: String, dir: String },
    #[error("cannot write {path}: it is a directory")]
    IsDirectory { path: String },
}

/// The files to write, each optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct OutputFiles {
    pub(crate) xml: Option<PathBuf>,
    pub(crate) normal: Option<PathBuf>,
    pub(crate) json: Option<PathBuf>,
}

impl OutputFiles {
    /// Checks the flags together: one file per format, one format per file.
    pub(crate) fn new(
        xml: Option<PathBuf>,
        normal: Option<PathBuf>,
        json: Option<PathBuf>,
        all: Option<PathBuf>,
        unsupported: Option<&str>,
    ) -> Result<Self, OutputError> {
        if let Some(letter) = unsupported {
            let c = letter.chars().next().unwrap_or('?');
            let what = match c {
                'G' => "grepable",
                'S' => "script kiddie",
                'M' => "machine",
                'H' => "hex",
                _ => "unknown",
            };
            return Err(OutputError::Unsupported(c, what));
        }
        for (letter, format, path) in [
            ('X', "xml", &xml),
            ('N', "text", &normal),
            ('J', "ndjson", &json),
            ('A', "text", &all),
        ] {
            match path.as_deref().map(Path::as_os_str) {
                Some(p) if p == "-" => return Err(OutputError::Stdout { letter, format }),
                Some(p) if p.is_empty() => return Err(OutputError::Empty { letter }),
                _ => {}
            }
        }
        let mut files = Self { xml, normal, json };
        if let Some(base) = all {
            let with = |ext: &str| {
                let mut p = base.clone().into_os_string();
                p.push(".");
                p.push(ext);
                PathBuf::from(p)
            };
            for (slot, ext, what, letter) in [
                (&mut files.xml, "xml", "XML", 'X'),
                (&mut files.normal, "nmap", "the text", 'N'),
                (&mut files.json, "json", "NDJSON", 'J'),
            ] {
                if slot.is_some() {
                    return Err(OutputError::Twice {
                        base: base.display().to_string(),
                        what,
                        path: with(ext).display().to_string(),
                        letter,
                    });
                }
                *slot = Some(with(ext));
            }
        }
        let named: Vec<&PathBuf> = [&files.xml, &files.normal, &files.json]
            .into_iter()
            .flatten()
            .collect();
        for (i, a) in named.iter().enumerate() {
            if named[..i].contains(a) {
                return Err(OutputError::SameFile {
                    path: a.display().to_string(),
                });
            }
            // Checked before scanning, so a typo does not cost the scan.
            let dir = match a.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(OutputError::NoDirectory {
                    path: a.display().to_string(),
                    dir: dir.display().to_string(),
                });
            }
            if a.is_dir() {
                return Err(OutputError::IsDirectory {
                    path: a.display().to_string(),
                });
            }
        }
        Ok(files)
    }
}

/// Writes `path` whole or not at all: `write` fills a fresh temporary file
/// beside it (never through a link planted at its name), which is synced
/// and renamed over `path`; on failure the temporary file is removed and
/// `path` is untouched.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        nmap_argv(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn nmap_output_flags_become_long_flags() {
        assert_eq!(
            argv(&[
                "scan", "-oX", "a.xml", "-oNb.txt", "-oJ", "c", "-oA", "d", "-p", "22"
            ]),
            [
                "scan",
                "--output-xml",
                "a.xml",
                "--output-normal=b.txt",
                "--output-json",
                "c",
                "--output-all",
                "d",
                "-p",
                "22"
            ]
        );
        assert_eq!(
            argv(&["scan", "-oG", "x"]),
            ["scan", "--nmap-output-unsupported=G", "x"]
        );
        assert_eq!(argv(&["scan", "--", "-oX"]), ["scan", "--", "-oX"]);
        assert_eq!(argv(&["scan", "-o", "-v"]), ["scan", "-o", "-v"]);
    }

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn all_names_three_files_and_bad_combinations_are_refused() {
        let f = OutputFiles::new(None, None, None, p("/tmp/scan"), None).unwrap();
        assert_eq!(
            f,
            OutputFiles {
                xml: p("/tmp/scan.xml"),
                normal: p("/tmp/scan.nmap"),
                json: p("/tmp/scan.json"),
            }
        );
        assert_eq!(
            OutputFiles::new(p("/nonexistent/a.xml"), None, None, None, None)
                .unwrap_err()
                .to_string(),
            "cannot write /nonexistent/a.xml: /nonexistent is not a directory"
        );
        assert_eq!(
            OutputFiles::new(None, None, p("/tmp"), None, None)
                .unwrap_err()
                .to_string(),
            "cannot write /tmp: it is a directory"
        );
        assert_eq!(
            OutputFiles::new(p("a.xml"), None, None, p("base"), None)
                .unwrap_err()
                .to_string(),
            "-oA base already writes XML to base.xml; give -oA or -oX, not both"
        );
        assert_eq!(
            OutputFiles::new(p("a"), p("a"), None, None, None)
                .unwrap_err()
                .to_string(),
            "a is named by two outputs; give each its own file"
        );
        assert_eq!(
            OutputFiles::new(p("-"), None, None, None, None)
                .unwrap_err()
                .to_string(),
            "-oX -: standard output carries the terminal's results; use --format xml instead"
        );
        assert_eq!(
            OutputFiles::new(None, None, None, None, Some("G"))
                .unwrap_err()
                .to_string(),
            "-oG (nmap's grepable output) is not supported: use -oX (XML), -oN (text), -oJ (NDJSON) or -oA"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("scanner-agent-out-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("scan.xml");
        write_atomically(&path, |w| w.write_all(b"old")).unwrap();
        let e = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
