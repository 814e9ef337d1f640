//! The checks every section of `config.yaml` reads its values with, so a
//! bad value is an error naming its key and line wherever it is: numbers
//! in a range ([`Bounded`]), prefix lengths ([`Prefix`]), listening ports,
//! strings through a parser ([`checked_str`]), and serde_yaml's message
//! with its position ([`yaml_error`]). A leaf: the sections (`firewall`,
//! `passthrough`, `guard`) use it without depending on the whole
//! configuration, and it depends on nothing of the crate.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// Reads a whole number and checks it inside the deserializer, so a bad
/// value is reported with its key and line.
pub fn checked_int<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: impl fmt::Display,
    check: impl FnOnce(u64) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct V<X, F>(X, F);
    impl<'de, T, X: fmt::Display, F: FnOnce(u64) -> Result<T, String>> de::Visitor<'de> for V<X, F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.1)(v).map_err(|e| E::custom(format!("{e} (expected {})", self.0)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            let v =
                u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))?;
            self.visit_u64(v)
        }
    }
    d.deserialize_u64(V(expected, check))
}

/// Reads a string and checks it inside the deserializer (see [`checked_int`]).
pub fn checked_str<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: &'static str,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct V<F>(&'static str, F);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> de::Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(expected, check))
}

/// Reads a whole string, then checks it (where [`checked_str`] checks while
/// reading): serde_yaml then names the list a bad item is in, not the item
/// (`guard.allow: ...` rather than `guard.allow[0]: ...`), which is what
/// the `guard:` section's messages have always said.
pub fn checked_string<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(de::Error::custom)
}

/// A whole number from `MIN` to `MAX`: every numeric key has a range in
/// which the agent is known to work, so no accepted value can overflow a
/// computation or an allocation later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

/// Milliseconds of a delay or round-trip timeout: at most a minute.
pub type Millis = Bounded<0, 60_000>;

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_int(d, format!("a whole number from {MIN} to {MAX}"), |v| {
            if (MIN..=MAX).contains(&v) {
                Ok(Self(v))
            } else {
                Err(format!("{v} is out of range"))
            }
        })
    }
}

/// A share of a whole, above 0 and at most 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share(pub f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Share;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a share above 0 and at most 1")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Share, E> {
                if v > 0.0 && v <= 1.0 {
                    Ok(Share(v))
                } else {
                    Err(E::custom(format!(
                        "{v} is out of range (expected a share above 0 and at most 1)"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Share, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Share, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_f64(V)
    }
}

/// A port to listen on: 0 would mean "any free port", which no scrape
/// configuration could point at.
pub fn listening_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    checked_int(d, "a port from 1 to 65535", |v| {
        u16::try_from(v)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{v} is out of range"))
    })
}

/// A prefix length of at most `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix<const MAX: u8>(pub u8);

impl<'de, const MAX: u8> Deserialize<'de> for Prefix<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = if MAX == 32 {
            "a prefix length 0-32"
        } else {
            "a prefix length 0-128"
        };
        checked_int(d, expected, |v| {
            u8::try_from(v)
                .ok()
                .filter(|&p| p <= MAX)
                .map(Self)
                .ok_or_else(|| format!("{v} is out of range"))
        })
    }
}

/// serde_yaml's message, with the position it leaves out of some top-level errors.
pub fn yaml_error(e: serde_yaml::Error) -> String {
    let message = e.to_string();
    match e.location() {
        Some(at) if !message.contains(" at line ") => {
            format!("{message} at line {} column {}", at.line(), at.column())
        }
        _ => message,
    }
}
