//! Finds the access token in a request: `Authorization: Bearer`, then the
//! `access_token` query parameter (browsers' `EventSource` cannot set headers), then
//! a cookie (subscribe only: a cookie is sent by browsers on cross-site form posts,
//! so accepting it for publishing would invite cross-site request forgery).

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};

use super::AuthError;

/// The query parameter that may carry a token.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Where a token may be looked for.
#[derive(Debug, Clone, Copy)]
pub struct TokenSources<'a> {
    /// Name of the cookie to read, or `None` to ignore cookies.
    pub cookie_name: Option<&'a str>,
}

/// Returns the request's token. An `Authorization` header of another scheme (a
/// browser behind HTTP Basic auth sends one with `EventSource`) does not hide a token
/// in the query or a cookie.
///
/// # Errors
/// [`AuthError::MissingToken`] when none is present; [`AuthError::MalformedToken`]
/// when the only candidate is an `Authorization` header that is not a usable bearer token.
pub fn find_token(headers: &HeaderMap, query: Option<&str>, sources: TokenSources<'_>) -> Result<String, AuthError> {
    let header = headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().map_err(|_| AuthError::MalformedToken).and_then(bearer));
    if let Some(Ok(token)) = header {
        return Ok(token);
    }
    if let Some(token) = query.and_then(query_token) {
        return Ok(token);
    }
    if let Some(name) = sources.cookie_name
        && let Some(token) = cookie_token(headers, name)
    {
        return Ok(token);
    }
    match header {
        Some(Err(error)) => Err(error),
        _ => Err(AuthError::MissingToken),
    }
}

fn bearer(value: &str) -> Result<String, AuthError> {
    let (scheme, token) = value.trim_start().split_once(' ').ok_or(AuthError::MalformedToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedToken);
    }
    match token.trim() {
        "" => Err(AuthError::MissingToken),
        token => Ok(token.to_owned()),
    }
}

fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key == ACCESS_TOKEN_PARAM && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

fn cookie_token(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SOURCES: TokenSources<'static> = TokenSources {
        cookie_name: Some("sse_token"),
    };

    fn headers(pairs: &[(axum::http::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn header_wins_over_query_and_cookie() {
        let h = headers(&[(AUTHORIZATION, "Bearer abc"), (COOKIE, "sse_token=ccc")]);
        assert_eq!(find_token(&h, Some("access_token=qqq"), SOURCES).unwrap(), "abc");
        let h = headers(&[(AUTHORIZATION, "bearer  abc ")]);
        assert_eq!(find_token(&h, None, SOURCES).unwrap(), "abc");
    }

    #[test]
    fn query_then_cookie() {
        let h = headers(&[(COOKIE, "a=1; sse_token=ccc")]);
        assert_eq!(
            find_token(&h, Some("stream=x&access_token=q%2Eq"), SOURCES).unwrap(),
            "q.q"
        );
        assert_eq!(find_token(&h, Some("stream=x"), SOURCES).unwrap(), "ccc");
        let no_cookies = TokenSources { cookie_name: None };
        assert_eq!(find_token(&h, None, no_cookies), Err(AuthError::MissingToken));
    }

    #[test]
    fn a_basic_authorization_header_does_not_hide_the_query_token() {
        let h = headers(&[(AUTHORIZATION, "Basic dXNlcjpwYXNz"), (COOKIE, "sse_token=ccc")]);
        assert_eq!(find_token(&h, Some("access_token=qqq"), SOURCES).unwrap(), "qqq");
        assert_eq!(find_token(&h, None, SOURCES).unwrap(), "ccc");
    }

    #[test]
    fn non_bearer_authorization_is_malformed() {
        let h = headers(&[(AUTHORIZATION, "Basic dXNlcjpwYXNz")]);
        assert_eq!(find_token(&h, None, SOURCES), Err(AuthError::MalformedToken));
        let h = headers(&[(AUTHORIZATION, "Bearer")]);
        assert_eq!(find_token(&h, None, SOURCES), Err(AuthError::MalformedToken));
        let h = headers(&[(AUTHORIZATION, "Bearer  ")]);
        assert_eq!(find_token(&h, None, SOURCES), Err(AuthError::MissingToken));
    }
}
