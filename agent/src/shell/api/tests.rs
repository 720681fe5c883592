//! Unit tests of `api`: the HTTP side of the API: decoding, tokens, flags.
use super::*;

#[test]
fn percent_escapes_are_decoded_and_bad_ones_kept() {
    assert_eq!(percent_decode("gw%2D1"), "gw-1");
    assert_eq!(percent_decode("plain"), "plain");
    assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    assert_eq!(percent_decode("é%"), "é%");
}

#[test]
fn the_token_comparison_needs_the_whole_token() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secre"));
    assert!(!constant_time_eq(b"", b"secret"));
    assert!(!constant_time_eq(b"secret!", b"secret"));
}

#[test]
fn query_flags() {
    assert!(query_flag("healthy=true", "healthy"));
    assert!(query_flag("x=1&healthy", "healthy"));
    assert!(!query_flag("healthy=false", "healthy"));
    assert!(!query_flag("", "healthy"));
}
