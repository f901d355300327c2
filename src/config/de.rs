//! Serde helpers for the values of configuration keys: each parses with the same function as
//! the flag, so a bad value is refused with the flag's message, at the value's position.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::error::ParseError;
use crate::tls::{ClientAuth, KeyLogTarget, Pattern, SpkiPin};

/// A string, or an array of strings: what a repeatable flag is in a file.
struct Strings;

impl<'de> Visitor<'de> for Strings {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(vec![v.to_owned()])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            out.push(item);
        }
        Ok(out)
    }
}

fn list<'de, D, T>(
    d: D,
    parse: impl Fn(&str) -> Result<T, ParseError>,
) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
{
    let items = d.deserialize_any(Strings)?;
    items
        .iter()
        .map(|item| parse(item).map_err(|e| de::Error::custom(e.describe())))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn one<'de, D, T>(
    d: D,
    parse: impl Fn(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text: String = serde::Deserialize::deserialize(d)?;
    parse(&text)
        .map(Some)
        .map_err(|e| de::Error::custom(e.describe()))
}

fn from_str<T: FromStr<Err = ParseError>>(text: &str) -> Result<T, ParseError> {
    text.parse()
}

pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    list(d, |s| Ok(s.to_owned()))
}

pub fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    list(d, |s| Ok(PathBuf::from(s)))
}

pub fn dns_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Pattern>>, D::Error> {
    list(d, Pattern::dns)
}

pub fn uri_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Pattern>>, D::Error> {
    list(d, Pattern::uri)
}

pub fn pins<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<SpkiPin>>, D::Error> {
    list(d, from_str::<SpkiPin>)
}

pub fn user_id<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::service::user::UserIdSource>, D::Error> {
    one(d, from_str::<crate::service::user::UserIdSource>)
}

pub fn sync<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::msg::store::SyncMode>, D::Error> {
    use crate::msg::store::SyncMode;
    one(d, |s| match s {
        "always" => Ok(SyncMode::Always),
        "batch" => Ok(SyncMode::Batch),
        other => Err(ParseError::new(format!(
            "'{other}' is not a sync mode (use always or batch)"
        ))),
    })
}

/// A size: a number of bytes, or text such as `"10G"` (see [`crate::files::parse_size`]).
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match serde::Deserialize::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(text) => crate::files::parse_size(&text)
            .map(Some)
            .map_err(|e| de::Error::custom(e.describe())),
    }
}

pub fn pin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SpkiPin>, D::Error> {
    one(d, from_str::<SpkiPin>)
}

pub fn keylog<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyLogTarget>, D::Error> {
    one(d, |s| Ok(KeyLogTarget::parse(s.as_ref())))
}

pub fn client_auth<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ClientAuth>, D::Error> {
    one(d, |s| match s {
        "required" => Ok(ClientAuth::Required),
        "optional" => Ok(ClientAuth::Optional),
        "none" => Ok(ClientAuth::None),
        other => Err(ParseError::new(format!(
            "'{other}' is not a client_auth mode (required, optional or none)"
        ))),
    })
}

/// A duration: `"10s"`, `"500ms"`, `"5m"`, or a number of seconds.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Dur(PhantomData<Duration>);
    impl Visitor<'_> for Dur {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"10s\", \"500ms\", \"5m\", or a number of seconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            crate::duration::parse(v).map_err(|e| E::custom(e.describe()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{v}: a duration cannot be negative")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
    }
    d.deserialize_any(Dur(PhantomData)).map(Some)
}
