//! The one answer to "are we in CI?".

/// Whether the run must not skip anything: `CI` is `true` (any case) or `1`. A missing tool
/// or unreachable service is then a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}
