//! Checks of what callers send against the limits of [`domain::limits::input`]: a value
//! over its limit is a `400` naming the field and the limit, before anything else reads it.

use crate::error::{ApiError, ApiResult};
use axum::http::StatusCode;
use domain::limits::input;

/// `value` of `field`, when it has at most `max` characters.
pub(crate) fn chars<'a>(field: &str, value: &'a str, max: usize) -> ApiResult<&'a str> {
    if value.chars().nth(max).is_some() {
        return Err(ApiError::too_long(field, max, "characters"));
    }
    Ok(value)
}

/// `value` of `field`, when it has at most `max` bytes (UTF-8).
pub(crate) fn bytes<'a>(field: &str, value: &'a str, max: usize) -> ApiResult<&'a str> {
    if value.len() > max {
        return Err(ApiError::too_long(field, max, "bytes"));
    }
    Ok(value)
}

/// A whole number of `field` in `min..=max`, `default` when not given.
pub(crate) fn number(
    field: &str,
    value: Option<&str>,
    default: usize,
    (min, max): (usize, usize),
) -> ApiResult<usize> {
    let Some(text) = value else {
        return Ok(default);
    };
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{field} must be a whole number from {min} to {max}"),
            )
        })
}

/// An opaque cursor this API gave: hex of at most [`input::CURSOR_CHARS`] characters.
pub(crate) fn cursor_text(value: &str) -> ApiResult<String> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the cursor is not one this API gave",
        )
    };
    chars("cursor", value, input::CURSOR_CHARS)?;
    hex::decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_their_limit_are_refused_naming_the_field_and_the_limit() {
        assert_eq!(chars("title", "abc", 3).unwrap(), "abc");
        let e = chars("title", "abcd", 3).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.detail, "title is longer than its limit of 3 characters");
        assert!(bytes("id", "æ", 1).is_err(), "two bytes");
        assert_eq!(number("limit", None, 50, (1, 500)).unwrap(), 50);
        assert_eq!(number("limit", Some("7"), 50, (1, 500)).unwrap(), 7);
        for bad in ["0", "501", "-1", "abc", "99999999999999999999999"] {
            let e = number("limit", Some(bad), 50, (1, 500)).unwrap_err();
            assert_eq!(
                e.detail, "limit must be a whole number from 1 to 500",
                "{bad}"
            );
        }
        assert_eq!(cursor_text(&hex::encode("3:R#a")).unwrap(), "3:R#a");
        assert!(cursor_text("zz").is_err());
        assert!(cursor_text(&"a".repeat(input::CURSOR_CHARS + 1)).is_err());
    }
}
