//! Label sets written out once as exposition text: `key="value",...` with
//! values escaped as prometheus-client escapes them (`\`, `"`, newline).
//! The layout writes each series' labels when the ruleset changes; a scrape
//! hands the text to the encoder as it is ([`Labels`] writes it through the
//! label key encoder, which copies without escaping), so at 10,000 rules a
//! scrape no longer escapes and lays out megabytes of unchanged label text.

use std::{
    fmt::Write as _,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

/// A label set, in the order its labels are encoded.
pub(super) trait LabelSet {
    fn write(&self, out: &mut Writer);
}

/// Writes one label set's text.
#[derive(Default)]
pub(super) struct Writer(String);

impl Writer {
    pub(super) fn label(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(key);
        self.0.push_str("=\"");
        let mut last = 0;
        for (i, b) in value.bytes().enumerate() {
            let escaped = match b {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                b'\n' => "\\n",
                _ => continue,
            };
            self.0.push_str(&value[last..i]);
            self.0.push_str(escaped);
            last = i + 1;
        }
        self.0.push_str(&value[last..]);
        self.0.push('"');
    }
}

/// A label set's text, ready for the encoder, with a digest of it made
/// once: a layout rebuild groups thousands of label sets by their text,
/// and hashing each one's hundred-odd bytes anew was most of it.
#[derive(Clone, Debug, Eq)]
pub(super) struct Labels {
    text: Arc<str>,
    digest: u64,
}

impl Labels {
    pub(super) fn of(set: &impl LabelSet) -> Self {
        let mut out = Writer::default();
        set.write(&mut out);
        let mut h = DefaultHasher::new();
        out.0.hash(&mut h);
        Self {
            text: out.0.into(),
            digest: h.finish(),
        }
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
            && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

/// Only the digest: maps of labels hash it no further ([`super::digest::ByDigest`]).
impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.text.is_empty() {
            return Ok(());
        }
        let mut label = encoder.encode_label();
        // The key encoder writes as given: the text is escaped already.
        let mut key = label.encode_label_key()?;
        key.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        encoding::text::encode,
        metrics::{counter::Counter, family::Family},
        registry::Registry,
    };

    use super::*;

    struct Two(&'static str, &'static str);

    impl LabelSet for Two {
        fn write(&self, out: &mut Writer) {
            out.label("chain", self.0);
            out.label("rule", self.1);
        }
    }

    /// The text is what prometheus-client writes for the same labels.
    #[test]
    fn prerendered_labels_encode_as_the_library_does() {
        let value = "-m comment --comment \"a\\\\b\nc\" -j ACCEPT";
        let encoded = |prerendered: bool| {
            let mut registry = Registry::default();
            if prerendered {
                let family = Family::<Labels, Counter>::default();
                family
                    .get_or_create(&Labels::of(&Two("INPUT", value)))
                    .inc();
                registry.register("r", "h", family);
            } else {
                let family = Family::<Vec<(String, String)>, Counter>::default();
                family
                    .get_or_create(&vec![
                        ("chain".into(), "INPUT".into()),
                        ("rule".into(), value.into()),
                    ])
                    .inc();
                registry.register("r", "h", family);
            }
            let mut out = String::new();
            encode(&mut out, &registry).unwrap();
            out
        };
        assert_eq!(encoded(true), encoded(false));
        assert!(encoded(true).contains(r#"rule="-m comment --comment \"a\\\\b\nc\" -j ACCEPT""#));
    }
}
