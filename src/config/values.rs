//! Value types of the configuration: secrets that never show, and durations.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string whose `Debug` and `Serialize` never reveal it.
///
/// Deserializes from a string or a number, because environment overrides such as
/// `SSE_GATEWAY_AUTH__HS256_SECRET=123456` arrive typed as numbers.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Uint(u64),
            Float(f64),
        }
        Ok(Self(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::Int(n) => n.to_string(),
            Raw::Uint(n) => n.to_string(),
            Raw::Float(n) => n.to_string(),
        }))
    }
}

/// Durations: human-readable strings (`"250ms"`, `"15s"`, `"1h"`) or plain numbers
/// of seconds (`SSE_GATEWAY_SERVER__HEARTBEAT_INTERVAL=5` arrives as a number).
pub(super) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(in crate::config) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
            Fractional(f64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => humantime::parse_duration(text.trim())
                .map_err(|error| de::Error::custom(format!("invalid duration `{text}`: {error}"))),
            Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Raw::Fractional(seconds) => Duration::try_from_secs_f64(seconds)
                .map_err(|_| de::Error::custom(format!("invalid duration {seconds}"))),
        }
    }
}
