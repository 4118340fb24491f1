//! The canonical request: one form of the request-target and Host, decided once before
//! anything is matched, and forwarded as decided.
//!
//! Upstreams resolve a request-target before they match it against their own locations
//! (nginx merges slashes and removes dot segments, WHATWG `URL` treats `%2e` as a dot,
//! Tomcat drops `;` parameters, IIS ignores letter case). If the gateway matched the raw
//! target and forwarded it unchanged, `/static/../admin` would be authorised as `/static`
//! and served as `/admin`. So the gateway resolves the target itself, routes on the result
//! and sends exactly that result upstream; what upstreams could read in more than one way
//! (an encoded `/`, a `\`, a NUL, `;` parameters) is refused unless a route opts in.
//!
//! Plain functions over bytes and `http` types, so they can be tested and benchmarked
//! without a server. An already-canonical request is borrowed, never copied.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::{HeaderMap, Method, Version};

/// Why a request cannot be given a canonical form. Every variant is answered with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not origin-form, absolute-form or (with OPTIONS) `*` (RFC 9112 §3.2).
    TargetForm,
    /// No `Host` on HTTP/1.1, more than one, or not a valid authority (RFC 9112 §3.2).
    Host,
    /// An escape that is not `%` and two hex digits, a control character, a backslash, a
    /// double-encoded byte (`%252e`), or escapes that decode to invalid UTF-8.
    Path,
    /// An encoded `/` (`%2F`) on a route that does not allow it.
    EncodedSlash,
    /// `;` path parameters on a route that does not allow them.
    PathParameters,
    /// The path would fall under another route if letter case were ignored, so a
    /// case-insensitive upstream could serve it under a policy that was not checked.
    AmbiguousCase,
    /// A `Content-Length` that is a list, repeated, or not plain digits; a `Transfer-Encoding`
    /// other than `chunked`.
    Framing,
}

impl Refusal {
    /// The machine-readable `code` of the 400 envelope.
    pub fn code(self) -> &'static str {
        match self {
            Self::TargetForm => "invalid_request_target",
            Self::Host => "invalid_host",
            Self::Path => "invalid_path",
            Self::EncodedSlash => "encoded_slash",
            Self::PathParameters => "path_parameters",
            Self::AmbiguousCase => "ambiguous_path",
            Self::Framing => "invalid_framing",
        }
    }

    /// The human-readable `message` of the 400 envelope.
    pub fn message(self) -> &'static str {
        match self {
            Self::TargetForm => {
                "The request target must be a path, or an absolute http or https URL."
            }
            Self::Host => "The request needs exactly one valid Host header.",
            Self::Path => "The request path contains a character or escape that is not allowed.",
            Self::EncodedSlash => "An encoded slash (%2F) is not allowed in this path.",
            Self::PathParameters => "Path parameters (;) are not allowed in this path.",
            Self::AmbiguousCase => "The path differs from a route only by letter case.",
            Self::Framing => {
                "Content-Length must be a single number, and Transfer-Encoding only chunked."
            }
        }
    }
}

/// Path features that some upstreams read differently; a route may allow them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathFlags {
    /// The path holds `%2F`, kept encoded.
    pub encoded_slash: bool,
    /// A segment holds `;` (raw, or `%3B`).
    pub path_parameters: bool,
}

impl PathFlags {
    /// Whether the path holds nothing a route must allow.
    pub fn is_plain(self) -> bool {
        self == Self::default()
    }
}

/// A request's target and host in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRequest<'a> {
    /// The host to route on: lower case, one trailing dot and the port removed. `None` for
    /// an HTTP/1.0 request without `Host` (it matches only routes without a `host`).
    pub host: Option<Cow<'a, str>>,
    /// The `Host` to forward: `host` plus the port, when one was given.
    pub authority: Option<Cow<'a, str>>,
    /// The canonical path (RFC 3986 §6.2.2 and §5.2.4), starting with `/`.
    pub path: Cow<'a, str>,
    /// The query, without `?`, byte for byte as received.
    pub query: Option<&'a str>,
    /// Features of the path that the matched route must allow.
    pub flags: PathFlags,
    /// `OPTIONS *` (RFC 9112 §3.2.4): about the server, not a resource.
    pub asterisk: bool,
    /// Whether the target on the wire differs from the canonical one (another path, or
    /// absolute-form), so the upstream must be sent the canonical origin-form.
    pub target_changed: bool,
    /// Whether the `Host` on the wire differs from `authority`.
    pub host_changed: bool,
}

impl CanonicalRequest<'_> {
    /// The origin-form target to forward: the path and, unchanged, the query.
    pub fn origin_form(&self) -> String {
        match self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.to_string(),
        }
    }
}

/// Puts a request in canonical form.
///
/// `target` is the request-target as received (Pingora's `raw_path()`); `uri_authority` is
/// the authority of an HTTP/2 request (`:authority`), `None` for HTTP/1.
///
/// # Errors
///
/// A [`Refusal`] for a target form, host or path that has no single reading.
pub fn canonicalize<'a>(
    method: &Method,
    version: Version,
    target: &'a [u8],
    headers: &'a HeaderMap,
    uri_authority: Option<&'a str>,
) -> Result<CanonicalRequest<'a>, Refusal> {
    let target = std::str::from_utf8(target).map_err(|_| Refusal::Path)?;
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let (host_header, second_host) = (hosts.next(), hosts.next());
    if second_host.is_some() {
        return Err(Refusal::Host);
    }
    if *method == Method::CONNECT {
        return Err(Refusal::TargetForm);
    }

    let (authority, path_and_query, absolute) = if target.starts_with('/') {
        (None, target, false)
    } else if target == "*" {
        if *method != Method::OPTIONS {
            return Err(Refusal::TargetForm);
        }
        (None, "/", false)
    } else if let Some(rest) = strip_http_scheme(target) {
        // Absolute-form (RFC 9112 §3.2.2): the authority replaces Host.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        (Some(authority), path_and_query, true)
    } else {
        return Err(Refusal::TargetForm);
    };

    let wire_host = match (authority, uri_authority, host_header) {
        (Some(authority), _, _) => Some(authority),
        (None, Some(authority), _) => Some(authority),
        (None, None, Some(value)) => Some(value.to_str().map_err(|_| Refusal::Host)?),
        (None, None, None) if version == Version::HTTP_10 || version == Version::HTTP_09 => None,
        (None, None, None) => return Err(Refusal::Host),
    };
    let (host, forwarded_authority) = match wire_host {
        Some(wire) => {
            let (host, authority) = canonical_host(wire)?;
            (Some(host), Some(authority))
        }
        None => (None, None),
    };
    let host_changed = match (&forwarded_authority, host_header) {
        (Some(authority), Some(header)) => authority.as_bytes() != header.as_bytes(),
        (Some(_), None) => true,
        (None, _) => false,
    };

    let (raw_path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
    let (path, flags) = canonical_path(raw_path)?;
    let target_changed = absolute || matches!(path, Cow::Owned(_)) || path_and_query.is_empty();
    Ok(CanonicalRequest {
        host,
        authority: forwarded_authority,
        path,
        query,
        flags,
        asterisk: target == "*",
        target_changed,
        host_changed,
    })
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        // Compared as bytes: the target may hold multi-byte characters at any offset.
        let prefix = target.as_bytes().get(..scheme.len())?;
        prefix
            .eq_ignore_ascii_case(scheme.as_bytes())
            .then(|| &target[scheme.len()..])
    })
}

/// Parses an authority (`host[:port]`, RFC 3986 §3.2) into the host to route on and the
/// authority to forward. Host names are letters, digits, `-`, `_` and dots, in labels of at
/// most 63 characters; one trailing dot is the same name (RFC 1034 §3.1); IPv6 literals in
/// brackets (no zone); the port is 1–65535.
///
/// # Errors
///
/// [`Refusal::Host`] for anything else, including userinfo and percent-escapes.
pub fn canonical_host(authority: &str) -> Result<(Cow<'_, str>, Cow<'_, str>), Refusal> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(Refusal::Host)?;
        literal.parse::<Ipv6Addr>().map_err(|_| Refusal::Host)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(Refusal::Host)?),
        };
        (&authority[..literal.len() + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 8
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(Refusal::Host);
        }
    }
    if !host.starts_with('[') {
        let name = host.strip_suffix('.').unwrap_or(host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(Refusal::Host);
        }
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let plain_port = port.is_none_or(|p| !p.starts_with('0'));
    if name.len() == host.len() && !name.bytes().any(|b| b.is_ascii_uppercase()) && plain_port {
        return Ok((Cow::Borrowed(host), Cow::Borrowed(authority)));
    }
    let name = name.to_ascii_lowercase();
    // The port as a number: `:0080` is `:80` (RFC 3986 §6.2.3).
    let forwarded = match port.and_then(|p| p.parse::<u16>().ok()) {
        Some(port) => format!("{name}:{port}"),
        None => name.clone(),
    };
    Ok((Cow::Owned(name), Cow::Owned(forwarded)))
}

/// Whether a byte may stand in a canonical path as it is: RFC 3986 `pchar` (unreserved,
/// sub-delims, `:` and `@`) other than `;` and `%`, which need a closer look.
fn is_plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// RFC 3986 §2.3 unreserved characters: an escape of one is the same character.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a path is canonical as it stands: plain bytes only, no empty segment but a final
/// one, no dot segment. The common case, and decided without allocating.
fn is_canonical_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || !bytes.iter().all(|&b| b == b'/' || is_plain_path_byte(b)) {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// The canonical form of an origin-form path (without query).
///
/// Unreserved escapes are decoded and the others upper-cased (RFC 3986 §6.2.2.1–2), dot
/// segments removed in every spelling (§5.2.4; `..` at the root stays at the root), repeated
/// slashes merged, characters outside `pchar` and non-ASCII bytes percent-encoded.
///
/// # Errors
///
/// [`Refusal::Path`] for a backslash (raw or `%5C`), a control character (raw or escaped),
/// a `%` not followed by two hex digits, a double-encoded byte (`%252e`, `%25%32%65`), and
/// escapes that decode to invalid UTF-8 (overlong `%C0%AE`).
pub fn canonical_path(path: &str) -> Result<(Cow<'_, str>, PathFlags), Refusal> {
    if is_canonical_path(path) {
        return Ok((Cow::Borrowed(path), PathFlags::default()));
    }
    let mut flags = PathFlags::default();
    let bytes = path.as_bytes();
    let mut segments: Vec<String> = Vec::new();
    let mut segment = String::new();
    // Bytes of the decoded path, kept only to check that escapes form valid UTF-8.
    let mut decoded: Vec<u8> = Vec::new();
    let mut non_ascii = false;
    let mut i = usize::from(bytes.first() == Some(&b'/'));
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => segments.push(std::mem::take(&mut segment)),
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex_value(h), hex_value(l)),
                    _ => (None, None),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Refusal::Path);
                };
                let value = hi << 4 | lo;
                i += 2;
                if is_unreserved(value) {
                    segment.push(char::from(value));
                    decoded.push(value);
                } else {
                    match value {
                        b'\\' => return Err(Refusal::Path),
                        0..=0x1f | 0x7f => return Err(Refusal::Path),
                        b'/' => flags.encoded_slash = true,
                        b';' => flags.path_parameters = true,
                        b'%' if escapes_an_escape(bytes, i + 1) => return Err(Refusal::Path),
                        0x80..=0xff => non_ascii = true,
                        _ => {}
                    }
                    push_escape(&mut segment, value);
                    decoded.push(value);
                }
            }
            b'\\' | 0..=0x20 | 0x7f => return Err(Refusal::Path),
            b';' => {
                flags.path_parameters = true;
                segment.push(';');
                decoded.push(b);
            }
            b if is_plain_path_byte(b) => {
                segment.push(char::from(b));
                decoded.push(b);
            }
            _ => {
                // `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}` and non-ASCII bytes:
                // encoded, as browsers and WHATWG `URL` send them.
                non_ascii |= b >= 0x80;
                push_escape(&mut segment, b);
                decoded.push(b);
            }
        }
        i += 1;
    }
    segments.push(segment);
    if non_ascii && std::str::from_utf8(&decoded).is_err() {
        return Err(Refusal::Path);
    }
    Ok((Cow::Owned(resolve_segments(segments)), flags))
}

/// Whether an escaped `%` (`%25`) is followed by two hex digits, raw or as escapes of
/// them (`%252e`, `%25%32%65`): a double-encoded byte, which an upstream that decodes twice
/// would read as another character than the gateway did. Refused, whatever the byte.
fn escapes_an_escape(bytes: &[u8], at: usize) -> bool {
    let mut at = at;
    for _ in 0..2 {
        let unit = match bytes.get(at) {
            Some(b'%') => {
                let decoded = match (bytes.get(at + 1), bytes.get(at + 2)) {
                    (Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)).map(|(h, l)| h << 4 | l),
                    _ => None,
                };
                at += 3;
                decoded
            }
            Some(&b) => {
                at += 1;
                Some(b)
            }
            None => None,
        };
        if !unit.is_some_and(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    true
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Removes dot segments (RFC 3986 §5.2.4) and empty segments, keeping a final slash.
fn resolve_segments(segments: Vec<String>) -> String {
    let count = segments.len();
    let mut kept: Vec<String> = Vec::with_capacity(count);
    let mut trailing_slash = false;
    for (i, segment) in segments.into_iter().enumerate() {
        let last = i + 1 == count;
        match segment.as_str() {
            "." | "" => trailing_slash = last,
            ".." => {
                kept.pop();
                trailing_slash = last;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(kept.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

/// The path as an upstream that decodes `%2F` into a separator would resolve it.
///
/// # Errors
///
/// [`Refusal::Path`] if the result is not a valid path (cannot happen for a canonical one).
pub fn with_slashes_decoded(path: &str) -> Result<String, Refusal> {
    let replaced = path.replace("%2F", "/");
    canonical_path(&replaced).map(|(p, _)| p.into_owned())
}

/// The path as a Windows upstream (IIS, ASP.NET) resolves it, when that differs: trailing
/// dots and spaces of a segment are dropped (`/admin./x` and `/admin%20/x` are `/admin/x`).
/// `None` when no segment has them.
///
/// # Errors
///
/// [`Refusal::Path`] for what has no reading outside Windows: an alternate data stream
/// (`file::$DATA`) or an 8.3 short name (`ADMINI~1`), which may stand for any long name.
pub fn windows_reading(path: &str) -> Option<Result<String, Refusal>> {
    let trailing = |segment: &str| segment.ends_with('.') || segment.ends_with("%20");
    let mut changed = false;
    for segment in path.split('/') {
        if names_data_stream(segment) || is_short_name(segment) {
            return Some(Err(Refusal::Path));
        }
        changed |= trailing(segment) && segment != "." && segment != "..";
    }
    if !changed {
        return None;
    }
    let stripped: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let mut s = segment;
            loop {
                if let Some(rest) = s.strip_suffix("%20") {
                    s = rest;
                } else if let Some(rest) = s.strip_suffix('.') {
                    s = rest;
                } else {
                    break s;
                }
            }
        })
        .collect();
    Some(canonical_path(&stripped.join("/")).map(|(p, _)| p.into_owned()))
}

/// Whether a segment names an NTFS alternate data stream (`file::$DATA`,
/// `file:stream:$DATA`, `file:$DATA`) in any spelling IIS decodes: `%3A` for `:` and `%24`
/// for `$`, either case.
fn names_data_stream(segment: &str) -> bool {
    // Most segments hold neither: no copy for them (the hot path allocates nothing).
    if !segment.contains([':', '%']) {
        return false;
    }
    let decoded = segment
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%24", "$");
    decoded.contains(":$")
}

/// An 8.3 short file name: one to six characters, `~`, digits, an optional extension.
fn is_short_name(segment: &str) -> bool {
    let stem = segment.split('.').next().unwrap_or(segment);
    match stem.split_once('~') {
        Some((name, number)) => {
            (1..=6).contains(&name.len())
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// The path as an upstream that drops `;` path parameters (Tomcat, Jetty, Spring) would
/// resolve it: `/a;x=1/..;/b` is `/a/../b`, that is `/b`.
///
/// # Errors
///
/// [`Refusal::Path`] if the result is not a valid path (cannot happen for a canonical one).
pub fn without_path_parameters(path: &str) -> Result<String, Refusal> {
    let stripped: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let end = [segment.find(';'), segment.find("%3B")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(segment.len());
            &segment[..end]
        })
        .collect();
    canonical_path(&stripped.join("/")).map(|(p, _)| p.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn path(raw: &str) -> Result<String, Refusal> {
        canonical_path(raw).map(|(p, _)| p.into_owned())
    }

    #[test]
    fn every_refusal_is_told_in_a_sentence() {
        use Refusal as R;
        let all = [
            R::TargetForm,
            R::Host,
            R::Path,
            R::EncodedSlash,
            R::PathParameters,
            R::AmbiguousCase,
            R::Framing,
        ];
        for refusal in all {
            let message = refusal.message();
            let problem = crate::reply::sentence_problem(message);
            assert_eq!(problem, None, "{refusal:?}: {message:?}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in [
            "/",
            "/app",
            "/app/",
            "/a/b.c/d~e",
            "/x:y@z",
            "/..a/b..",
            "/.well-known/x",
        ] {
            let (p, flags) = canonical_path(raw).unwrap();
            assert!(matches!(p, Cow::Borrowed(_)), "{raw}");
            assert_eq!(p, raw);
            assert!(flags.is_plain());
        }
    }

    #[test]
    fn dot_segments_are_removed_in_every_spelling() {
        for (raw, want) in [
            ("/static/../admin/secret", "/admin/secret"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%2E%2e/admin", "/admin"),
            ("/static/.%2E/admin", "/admin"),
            ("/static/./a", "/static/a"),
            ("/static/%2e/a", "/static/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../admin", "/admin"),
            ("/..", "/"),
            ("/a/...", "/a/..."),
        ] {
            assert_eq!(path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn slashes_merge_and_escapes_normalise() {
        for (raw, want) in [
            ("//app/secret", "/app/secret"),
            ("/a///b//", "/a/b/"),
            ("/%61dmin/secret", "/admin/secret"),
            ("/%41%44MIN", "/ADMIN"),
            ("/%7euser", "/~user"),
            ("/x%3a", "/x%3A"),
            ("/x%20y", "/x%20y"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a\"b<c>", "/a%22b%3Cc%3E"),
            ("/%25", "/%25"),
            ("/100%25off", "/100%25off"),
            ("/%25x1", "/%25x1"),
            ("/%252", "/%252"),
        ] {
            assert_eq!(path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/a\\b",
            "/static\\..\\admin",
            "/a%5cb",
            "/a%5Cb",
            "/a%00b",
            "/a%0d%0ab",
            "/a%09",
            "/a%7f",
            "/a%",
            "/a%2",
            "/a%zz",
            "/%252e%252e/admin",
            "/%252F",
            "/%255c",
            "/%2500",
            "/%2541dmin",
            "/%25%32%65%25%32%65/admin",
            "/%25%34%31",
            "/%C0%AE%C0%AE/admin",
            "/%C0%AF",
            "/%ff",
        ] {
            assert_eq!(path(raw), Err(Refusal::Path), "{raw}");
        }
    }

    #[test]
    fn slashes_and_parameters_are_flagged() {
        let (p, flags) = canonical_path("/admin%2fsecret").unwrap();
        assert_eq!(p, "/admin%2Fsecret");
        assert!(flags.encoded_slash && !flags.path_parameters);
        let (_, flags) = canonical_path("/admin;x=1/secret").unwrap();
        assert!(flags.path_parameters);
        let (_, flags) = canonical_path("/admin%3bx").unwrap();
        assert!(flags.path_parameters);
        assert_eq!(
            with_slashes_decoded("/files/a%2F..%2F..%2Fadmin").unwrap(),
            "/admin"
        );
        assert_eq!(
            without_path_parameters("/static/..;/admin/x").unwrap(),
            "/admin/x"
        );
        assert_eq!(without_path_parameters("/a;b%3Bc/d").unwrap(), "/a/d");
        assert_eq!(windows_reading("/admin./x"), Some(Ok("/admin/x".into())));
        assert_eq!(windows_reading("/admin%20/x"), Some(Ok("/admin/x".into())));
        assert_eq!(
            windows_reading("/admin.%20./x"),
            Some(Ok("/admin/x".into()))
        );
        assert_eq!(windows_reading("/admin/x"), None);
        assert_eq!(windows_reading("/a.b/c~d/file~x"), None);
        for refused in [
            "/admin::$DATA",
            "/admin::%24DATA",
            "/admin%3A%3A%24DATA",
            "/admin%3a%3a%24DATA/x",
            "/admin:%3A$DATA",
            "/admin:$DATA",
            "/admin:stream:$DATA",
            "/ADMIN~1",
            "/PROGRA~1.TXT/x",
        ] {
            assert_eq!(
                windows_reading(refused),
                Some(Err(Refusal::Path)),
                "{refused}"
            );
        }
    }

    fn request(target: &str, host: Option<&str>) -> Result<CanonicalRequest<'static>, Refusal> {
        let headers: &'static mut HeaderMap = Box::leak(Box::new(HeaderMap::new()));
        if let Some(host) = host {
            headers.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        }
        let target: &'static str = Box::leak(target.to_string().into_boxed_str());
        canonicalize(
            &Method::GET,
            Version::HTTP_11,
            target.as_bytes(),
            headers,
            None,
        )
    }

    #[test]
    fn target_forms() {
        let r = request("http://Secure.Example./x?q=1", None).unwrap();
        assert_eq!(r.host.as_deref(), Some("secure.example"));
        assert_eq!(r.authority.as_deref(), Some("secure.example"));
        assert_eq!(r.origin_form(), "/x?q=1");
        assert!(r.target_changed && r.host_changed);
        let r = request("HTTPS://h.example:8443", Some("h.example:8443")).unwrap();
        assert_eq!(r.origin_form(), "/");
        assert!(r.target_changed && !r.host_changed);
        let r = request("/", Some("Secure.example:0080")).unwrap();
        assert_eq!(r.authority.as_deref(), Some("secure.example:80"));
        let r = request("/p?a=%2F..", Some("h")).unwrap();
        assert!(!r.target_changed);
        assert_eq!(r.query, Some("a=%2F.."));
        for bad in [
            "admin/x",
            "?x",
            "x:/admin",
            "secure.example:443",
            "*",
            "ftp://h/x",
        ] {
            assert_eq!(request(bad, Some("h")), Err(Refusal::TargetForm), "{bad}");
        }
        let headers = HeaderMap::new();
        assert!(canonicalize(&Method::OPTIONS, Version::HTTP_11, b"*", &headers, None).is_err());
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("h"));
        let r = canonicalize(&Method::OPTIONS, Version::HTTP_11, b"*", &headers, None).unwrap();
        assert!(r.asterisk);
    }

    #[test]
    fn hosts() {
        for (raw, want) in [
            ("secure.example", "secure.example"),
            ("SECURE.example.", "secure.example"),
            ("secure.example:8080", "secure.example"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:80", "[::1]"),
            ("a_b.example", "a_b.example"),
            ("secure.example:0080", "secure.example"),
        ] {
            let r = request("/", Some(raw)).unwrap();
            assert_eq!(r.host.as_deref(), Some(want), "{raw}");
        }
        for bad in [
            "",
            "secure.example..",
            ".secure.example",
            "secure.example:",
            "secure.example:99999",
            "secure.example:0",
            "secure.example:8a",
            "user@secure.example",
            "secure%2eexample",
            "secure example",
            "[::1",
            "[fe80::1%25eth0]",
            "[::1]x",
            "a:b:c",
        ] {
            assert_eq!(request("/", Some(bad)), Err(Refusal::Host), "{bad:?}");
        }
        assert_eq!(request("/", None), Err(Refusal::Host));
        let headers = HeaderMap::new();
        let r = canonicalize(&Method::GET, Version::HTTP_10, b"/", &headers, None).unwrap();
        assert_eq!(r.host, None);
        let mut headers = HeaderMap::new();
        headers.append(http::header::HOST, HeaderValue::from_static("a"));
        headers.append(http::header::HOST, HeaderValue::from_static("a"));
        assert_eq!(
            canonicalize(&Method::GET, Version::HTTP_11, b"/", &headers, None),
            Err(Refusal::Host)
        );
    }
}
