//! File keys: what a function or a client may name a file.
//!
//! A key is at most [`MAX_KEY_BYTES`] of UTF-8, made of `/`-separated
//! segments, none empty, `.` or `..`, and no control characters or
//! backslashes. Keys are compared byte for byte: no case folding, no
//! Unicode normalisation, no percent-decoding (the HTTP layer decodes a
//! path once, before it gets here), so two spellings are two keys.

use super::StorageError;

/// Longest key, in bytes (S3 allows 1,024 for the whole object name).
pub const MAX_KEY_BYTES: usize = 512;

/// `key` if it is a valid key, else why not.
pub fn check(key: &str) -> Result<&str, StorageError> {
    let refuse = |why: &str| {
        Err(StorageError::InvalidInput(format!(
            "file key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return refuse("empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::InvalidInput(format!(
            "a file key is at most {MAX_KEY_BYTES} bytes, this one has {}",
            key.len()
        )));
    }
    if key.chars().any(|c| c.is_control()) {
        return refuse("control characters are not allowed");
    }
    if key.contains('\\') {
        return refuse("backslashes are not allowed");
    }
    for segment in key.split('/') {
        match segment {
            "" => return refuse("empty segment (a leading, trailing or double `/`)"),
            "." | ".." => return refuse("`.` and `..` segments are not allowed"),
            _ => {}
        }
    }
    Ok(key)
}

/// A listing prefix: empty (everything), or a key's start (it may end in
/// `/`, and need not be a whole segment).
pub fn check_prefix(prefix: &str) -> Result<&str, StorageError> {
    if prefix.is_empty() {
        return Ok(prefix);
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err(StorageError::InvalidInput(
            "a listing prefix cannot start with `/`".into(),
        ));
    }
    check(trimmed).map(|_| prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "avatars/ada/me.png",
            "ü/空 白.txt",
            "a.b/..c/d..",
            "x%2Fy",
        ] {
            assert!(check(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn refuses_what_could_escape_or_confuse() {
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        for key in [
            "", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "../a", "a\\b", "a\nb", "a\0b",
            "a\u{7f}b", "a\u{85}b", &long,
        ] {
            assert!(
                matches!(check(key), Err(StorageError::InvalidInput(_))),
                "{key:?}"
            );
        }
    }

    #[test]
    fn prefixes_may_end_in_a_slash() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("avatars/").is_ok());
        assert!(check_prefix("avatars/ad").is_ok());
        assert!(check_prefix("/").is_err());
        assert!(check_prefix("a//").is_err());
        assert!(check_prefix("../").is_err());
    }
}
