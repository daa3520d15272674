//! `StreamPattern`: a stream name, a prefix ending in `*` (`prices.*`), or `*`.
//!
//! The same grammar serves token claims (what a token may subscribe or publish to)
//! and subscriptions (`GET /events?stream=prices.*`). A pattern names every stream
//! it matches, existing and future; one pattern covers another when everything the
//! second matches, the first does too (`prices.*` covers `prices.eur.*`, an exact
//! name never covers a pattern). Anything else (`*` inside a name, an empty string,
//! characters outside the stream-name alphabet) is refused, never guessed at.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::StreamName;
use super::name::{MAX_STREAM_NAME_LEN, is_name_byte};

/// A set of streams: one name, every name with a prefix, or every name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamPattern {
    /// `*`: every stream.
    Any,
    /// `prefix*`: streams starting with `prefix` (which may itself be a full name).
    Prefix(Arc<str>),
    /// A single stream.
    Exact(StreamName),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a stream pattern is a name (1-128 of ASCII letters, digits, '.', '_', '-', ':'), a name prefix ending in '*', or '*'"
)]
pub struct InvalidPattern;

impl StreamPattern {
    /// Parses a pattern as written in a token or a subscription.
    ///
    /// ```
    /// use sse_gateway::stream::StreamPattern;
    /// assert_eq!(StreamPattern::try_new("prices.*").unwrap().to_string(), "prices.*");
    /// assert!(StreamPattern::try_new("a*b").is_err());
    /// ```
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
            Self::Prefix(Arc::from(body))
        } else {
            Self::Exact(StreamName::try_new(body).map_err(|_| InvalidPattern)?)
        })
    }

    /// Whether this pattern matches `stream`.
    ///
    /// ```
    /// use sse_gateway::stream::{StreamName, StreamPattern};
    /// let prices = StreamPattern::try_new("prices.*").unwrap();
    /// assert!(prices.matches(&StreamName::try_new("prices.eur").unwrap()));
    /// assert!(!prices.matches(&StreamName::try_new("prices").unwrap()));
    /// ```
    pub fn matches(&self, stream: &StreamName) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => stream.as_str().starts_with(&**prefix),
            Self::Exact(name) => name == stream,
        }
    }

    /// Whether every stream `other` matches, this pattern matches too.
    ///
    /// ```
    /// use sse_gateway::stream::StreamPattern;
    /// let p = |text| StreamPattern::try_new(text).unwrap();
    /// assert!(p("a.*").covers(&p("a.b.*")));
    /// assert!(!p("a.b.*").covers(&p("a.*")));
    /// assert!(!p("a.b").covers(&p("a.b*")));
    /// ```
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Prefix(prefix), Self::Prefix(other)) => other.starts_with(&**prefix),
            (_, Self::Exact(name)) => self.matches(name),
            (Self::Exact(_), Self::Prefix(_)) => false,
        }
    }

    /// The prefix every matching name starts with (`""` for `*`); `None` for a name.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Self::Any => Some(""),
            Self::Prefix(prefix) => Some(prefix),
            Self::Exact(_) => None,
        }
    }

    /// The stream, when this pattern is a single name.
    pub fn as_name(&self) -> Option<&StreamName> {
        match self {
            Self::Exact(name) => Some(name),
            _ => None,
        }
    }
}

/// `patterns` without those another one covers (`ci.a` under `ci.*`, `ci.*` under
/// `*`), in their order: a subscription to the rest receives every event once.
///
/// ```
/// use sse_gateway::stream::{StreamPattern, pattern::minimal};
/// let p = |text| StreamPattern::try_new(text).unwrap();
/// assert_eq!(minimal(&[p("ci.a"), p("ci.*"), p("x")]), [p("ci.*"), p("x")]);
/// ```
pub fn minimal(patterns: &[StreamPattern]) -> Vec<StreamPattern> {
    let mut kept: Vec<StreamPattern> = Vec::with_capacity(patterns.len());
    for (index, pattern) in patterns.iter().enumerate() {
        let covered = patterns
            .iter()
            .enumerate()
            // An identical pattern earlier in the list counts as covering it.
            .any(|(other, by)| other != index && by.covers(pattern) && (by != pattern || other < index));
        if !covered {
            kept.push(pattern.clone());
        }
    }
    kept
}

impl From<StreamName> for StreamPattern {
    fn from(name: StreamName) -> Self {
        Self::Exact(name)
    }
}

impl fmt::Display for StreamPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(name) => f.write_str(name.as_str()),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
    }

    fn pattern(text: &str) -> StreamPattern {
        StreamPattern::try_new(text).unwrap()
    }

    #[test]
    fn exact_prefix_and_any_patterns_match_as_documented() {
        let exact = pattern("messages");
        let prefix = pattern("prices.*");
        let any = pattern("*");
        assert!(exact.matches(&name("messages")));
        assert!(!exact.matches(&name("messages2")));
        assert!(prefix.matches(&name("prices.eur")));
        assert!(!prefix.matches(&name("prices")));
        assert!(!prefix.matches(&name("pricesX")));
        assert!(any.matches(&name("anything")));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "a**",
            "pri\u{0441}es.*",
            "a b",
            "a/*",
            &"x".repeat(129),
        ] {
            assert_eq!(StreamPattern::try_new(bad), Err(InvalidPattern), "{bad:?}");
        }
    }

    #[test]
    fn coverage_follows_what_the_patterns_match() {
        let cases = [
            ("*", "*", true),
            ("*", "a.*", true),
            ("*", "a", true),
            ("a.*", "*", false),
            ("a.*", "a.*", true),
            ("a.*", "a.b.*", true),
            ("a.b.*", "a.*", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a*", "a.*", true),
            ("a.b", "a.b", true),
            ("a.b", "a.b*", false),
            ("a.b", "a.*", false),
            ("a.b", "*", false),
            ("a.bc*", "a.b*", false),
        ];
        for (holder, wanted, covered) in cases {
            assert_eq!(
                pattern(holder).covers(&pattern(wanted)),
                covered,
                "{holder} covers {wanted}"
            );
        }
    }

    proptest! {
        #[test]
        fn prefix_patterns_match_exactly_the_names_they_start(prefix in "[a-z.]{1,8}", rest in "[a-z.]{0,8}") {
            let prefixed = pattern(&format!("{prefix}*"));
            let stream = name(&format!("{prefix}{rest}"));
            prop_assert!(prefixed.matches(&stream));
            prop_assert_eq!(pattern(&prefix).matches(&stream), rest.is_empty());
        }

        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,20}") {
            if let Ok(parsed) = StreamPattern::try_new(&text) {
                prop_assert_eq!(parsed.to_string(), text);
            }
        }

        /// Coverage agrees with matching: whatever the covered pattern matches, the
        /// covering one matches too.
        #[test]
        fn a_covering_pattern_matches_everything_the_covered_one_does(
            holder in "[ab.]{0,3}\\*?", wanted in "[ab.]{0,3}\\*?", stream in "[ab.]{1,5}",
        ) {
            let (Ok(holder), Ok(wanted)) = (StreamPattern::try_new(&holder), StreamPattern::try_new(&wanted)) else {
                return Ok(());
            };
            if holder.covers(&wanted) && wanted.matches(&name(&stream)) {
                prop_assert!(holder.matches(&name(&stream)));
            }
        }
    }
}
