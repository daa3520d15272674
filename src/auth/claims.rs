//! Token claims. `subscribe` and `publish` hold [`StreamPattern`]s; a malformed
//! pattern makes the whole token invalid: a grant that cannot be read exactly is
//! refused rather than guessed at.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::stream::{StreamName, StreamPattern};

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
    /// Issued at, seconds since the Unix epoch: a revocation of the subject refuses
    /// tokens issued up to the second it was made (all of them without `iat`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "numeric_date")]
    pub iat: Option<u64>,
    /// Token id: `POST /revocations {"jti"}` revokes this one token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
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
    /// May revoke tokens (`POST /revocations`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
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
    use super::*;

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
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
}
