//! `StreamName`: 1–128 ASCII letters, digits, `.`, `_`, `-` and `:`.
//!
//! `*` is reserved for patterns in token claims (see `auth::claims`), so it is never
//! part of a name.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest stream name, in characters.
pub const MAX_STREAM_NAME_LEN: usize = 128;

/// A validated stream name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

/// Why a stream name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStreamName {
    #[error("stream name must not be empty")]
    Empty,
    #[error("stream name is longer than {MAX_STREAM_NAME_LEN} characters")]
    TooLong,
    #[error("stream name may only contain ASCII letters, digits, '.', '_', '-' and ':'")]
    InvalidCharacter,
}

/// Whether `byte` may appear in a stream name.
pub fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b':')
}

impl StreamName {
    /// Validates `text` as a stream name.
    ///
    /// ```
    /// use sse_gateway::stream::StreamName;
    /// assert_eq!(StreamName::try_new("prices.eur:usd").unwrap().as_str(), "prices.eur:usd");
    /// assert!(StreamName::try_new("prices.*").is_err()); // `*` is for token patterns
    /// ```
    ///
    /// # Errors
    /// [`InvalidStreamName`] naming the rule broken.
    pub fn try_new(text: &str) -> Result<Self, InvalidStreamName> {
        if text.is_empty() {
            return Err(InvalidStreamName::Empty);
        }
        if text.len() > MAX_STREAM_NAME_LEN {
            return Err(InvalidStreamName::TooLong);
        }
        if !text.bytes().all(is_name_byte) {
            return Err(InvalidStreamName::InvalidCharacter);
        }
        Ok(Self(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for StreamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["messages", "prices.EUR-USD", "a_b:c", "0", &"x".repeat(128)] {
            assert!(StreamName::try_new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(StreamName::try_new(""), Err(InvalidStreamName::Empty));
        assert_eq!(StreamName::try_new(&"x".repeat(129)), Err(InvalidStreamName::TooLong));
        for bad in ["a*", "*", "a b", "a/b", "é", "a,b", "a\n", "\u{0430}"] {
            assert_eq!(
                StreamName::try_new(bad),
                Err(InvalidStreamName::InvalidCharacter),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn validity_matches_the_alphabet(text in "\\PC{0,140}") {
            let expected = (1..=128).contains(&text.len()) && text.bytes().all(is_name_byte);
            prop_assert_eq!(StreamName::try_new(&text).is_ok(), expected);
        }
    }
}
