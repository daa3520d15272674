//! Token claims and the stream patterns in `subscribe` / `publish`.
//!
//! A pattern is an exact stream name, a prefix ending in `*` (`prices.*`), or `*`.
//! Anything else (a `*` inside a name, an empty string, characters outside the
//! stream-name alphabet) makes the whole token invalid: a grant that cannot be read
//! exactly is refused rather than guessed at.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::stream::StreamName;
use crate::stream::name::{MAX_STREAM_NAME_LEN, is_name_byte};

/// One grant in a `subscribe` or `publish` claim.
#[derive(Clone, PartialEq, Eq)]
pub enum StreamPattern {
    /// `*`: every stream.
    Any,
    /// `prefix*`: streams starting with `prefix` (which may itself be a full name).
    Prefix(String),
    /// A single stream.
    Exact(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream pattern")]
pub struct InvalidPattern;

impl StreamPattern {
    /// Parses a pattern as written in a token.
    ///
    /// # Errors
    /// [`InvalidPattern`] for anything that is not a name, `prefix*` or `*`.
    pub fn try_new(text: &str) -> Result<Self, InvalidPattern> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (body, is_prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.is_empty() || body.len() > MAX_STREAM_NAME_LEN || !body.bytes().all(is_name_byte) {
            return Err(InvalidPattern);
        }
        Ok(if is_prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Exact(body.to_owned())
        })
    }

    /// Whether this pattern grants `stream`.
    ///
    /// ```
    /// use sse_gateway::auth::StreamPattern;
    /// use sse_gateway::stream::StreamName;
    /// let prices = StreamPattern::try_new("prices.*").unwrap();
    /// assert!(prices.matches(&StreamName::try_new("prices.eur").unwrap()));
    /// assert!(!prices.matches(&StreamName::try_new("prices").unwrap()));
    /// ```
    pub fn matches(&self, stream: &StreamName) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => stream.as_str().starts_with(prefix.as_str()),
            Self::Exact(name) => stream.as_str() == name,
        }
    }
}

impl fmt::Display for StreamPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(name) => f.write_str(name),
        }
    }
}

impl fmt::Debug for StreamPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Serialize for StreamPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::try_new(&text).map_err(|_| de::Error::custom("invalid stream pattern"))
    }
}

/// The claims the gateway reads; unknown claims are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch (fractions, allowed by RFC 7519, are dropped).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "numeric_date")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Streams the holder may subscribe to.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub subscribe: Vec<StreamPattern>,
    /// Streams the holder may publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub publish: Vec<StreamPattern>,
}

impl Claims {
    /// Whether the `subscribe` claim covers `stream`.
    pub fn may_subscribe(&self, stream: &StreamName) -> bool {
        self.subscribe.iter().any(|pattern| pattern.matches(stream))
    }

    /// Whether the `publish` claim covers `stream`.
    pub fn may_publish(&self, stream: &StreamName) -> bool {
        self.publish.iter().any(|pattern| pattern.matches(stream))
    }
}

/// An RFC 7519 NumericDate: whole or fractional seconds (fractions truncated;
/// negative values clamp to 0). Anything else does not parse.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(value) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let seconds = match (value.as_u64(), value.as_i64(), value.as_f64()) {
        (Some(whole), _, _) => whole,
        (None, Some(_negative), _) => 0,
        (None, None, Some(fraction)) if fraction.is_finite() => fraction.max(0.0) as u64,
        _ => return Err(de::Error::custom("invalid NumericDate")),
    };
    Ok(Some(seconds))
}

/// Accepts `"x"` as well as `["x", …]`, as JWT `aud` does.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
    }

    #[test]
    fn exact_prefix_and_any_patterns_match_as_documented() {
        let exact = StreamPattern::try_new("messages").unwrap();
        let prefix = StreamPattern::try_new("prices.*").unwrap();
        let any = StreamPattern::try_new("*").unwrap();
        assert!(exact.matches(&name("messages")));
        assert!(!exact.matches(&name("messages2")));
        assert!(prefix.matches(&name("prices.eur")));
        assert!(!prefix.matches(&name("prices")));
        assert!(!prefix.matches(&name("pricesX")));
        assert!(any.matches(&name("anything")));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["", "**", "a*b", "*a", "a**", "pri\u{0441}es.*", "a b", "a/*"] {
            assert_eq!(StreamPattern::try_new(bad), Err(InvalidPattern), "{bad:?}");
        }
    }

    #[test]
    fn claims_accept_a_single_string_or_a_list() {
        let claims: Claims =
            serde_json::from_str(r#"{"sub":"x","subscribe":"a","publish":["b","c.*"],"aud":"api"}"#).unwrap();
        assert!(claims.may_subscribe(&name("a")));
        assert!(claims.may_publish(&name("c.d")));
        assert!(!claims.may_publish(&name("a")));
        assert_eq!(claims.aud, ["api"]);
    }

    #[test]
    fn numeric_dates_may_be_fractional() {
        let claims: Claims = serde_json::from_str(r#"{"exp":1767225600.75,"nbf":-5}"#).unwrap();
        assert_eq!(claims.exp, Some(1_767_225_600));
        assert_eq!(claims.nbf, Some(0));
        assert!(serde_json::from_str::<Claims>(r#"{"exp":"tomorrow"}"#).is_err());
    }

    #[test]
    fn claims_with_a_malformed_pattern_do_not_parse() {
        assert!(serde_json::from_str::<Claims>(r#"{"subscribe":["ok","bad*x"]}"#).is_err());
    }

    proptest! {
        #[test]
        fn prefix_patterns_match_exactly_the_names_they_start(prefix in "[a-z.]{1,8}", rest in "[a-z.]{0,8}") {
            let pattern = StreamPattern::try_new(&format!("{prefix}*")).unwrap();
            let stream = name(&format!("{prefix}{rest}"));
            prop_assert!(pattern.matches(&stream));
            let exact = StreamPattern::try_new(&prefix).unwrap();
            prop_assert_eq!(exact.matches(&stream), rest.is_empty());
        }

        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,20}") {
            if let Ok(pattern) = StreamPattern::try_new(&text) {
                prop_assert_eq!(pattern.to_string(), text);
            }
        }
    }
}
