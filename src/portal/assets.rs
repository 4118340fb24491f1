//! The portal's images: the site's icon (built in, or `portal.favicon_file`) and the logo
//! of `portal.logo_file`, read once at start and served from the portal's own prefix, so
//! a signed-out visitor's browser gets them without a session and they never reach an
//! upstream. Each is served under a name carrying a hash of its bytes, so it can be cached
//! for a year; `/favicon.ico` (which browsers ask for by themselves) is the icon too.

use bytes::Bytes;
use http::StatusCode;
use sha2::{Digest, Sha256};

use super::site::Page;
use crate::config::{PortalConfig, image_content_type};

/// The largest image file the portal reads (bytes): an icon or a logo, not a photograph.
pub const MAX_IMAGE_BYTES: u64 = 256 * 1024;

/// A year: the cache lifetime of a name that changes with the bytes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A day: the cache lifetime of `/favicon.ico`, whose name never changes.
const A_DAY: &str = "public, max-age=86400";

/// An image opened on its own is a document of the portal's origin: an SVG's scripts and
/// links are kept from running there.
const IMAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// One image, as served.
#[derive(Clone, Debug)]
pub struct Asset {
    body: Bytes,
    content_type: &'static str,
    /// `/static/{name}-{hash}.{extension}`, below the prefix.
    sub: String,
    /// The prefix and `sub`: where pages link to it.
    href: String,
}

impl Asset {
    /// `body` served as `{prefix}/static/{name}-{hash of body}.{extension}`.
    fn new(prefix: &str, name: &str, body: Bytes, content_type: &'static str) -> Self {
        let hash = hex::encode(&Sha256::digest(&body)[..8]);
        let extension = match content_type {
            "image/svg+xml" => "svg",
            "image/x-icon" => "ico",
            "image/jpeg" => "jpg",
            other => other.trim_start_matches("image/"),
        };
        let sub = format!("/static/{name}-{hash}.{extension}");
        Self {
            body,
            content_type,
            href: format!("{prefix}{sub}"),
            sub,
        }
    }

    /// Where pages link to it.
    pub fn href(&self) -> &str {
        &self.href
    }

    /// Its `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// The image as an answer, cached for `cache_control`.
    fn page(&self, cache_control: &str) -> Page {
        Page {
            status: StatusCode::OK,
            headers: vec![
                (http::header::CACHE_CONTROL, cache_control.to_owned()),
                (http::header::CONTENT_SECURITY_POLICY, IMAGE_CSP.to_owned()),
            ],
            content_type: self.content_type,
            body: self.body.clone(),
        }
    }
}

/// The portal's icon and logo.
#[derive(Clone, Debug)]
pub struct Assets {
    /// The site's icon: `portal.favicon_file`, else the built-in one.
    pub favicon: Asset,
    /// `portal.logo_file`, when set.
    pub logo: Option<Asset>,
}

impl Assets {
    /// Reads `portal.favicon_file` and `portal.logo_file`; `built_in_icon` (an SVG) when
    /// there is no icon file. Fails naming the key whose file cannot be used.
    pub fn load(portal: &PortalConfig, built_in_icon: String) -> Result<Self, String> {
        let prefix = &portal.path_prefix;
        let favicon = match read_image("portal.favicon_file", &portal.favicon_file)? {
            Some((body, kind)) => Asset::new(prefix, "favicon", body, kind),
            None => Asset::new(prefix, "favicon", built_in_icon.into(), "image/svg+xml"),
        };
        let logo = read_image("portal.logo_file", &portal.logo_file)?
            .map(|(body, kind)| Asset::new(prefix, "logo", body, kind));
        Ok(Self { favicon, logo })
    }

    /// The answer to `sub` (the path below the prefix) when it names one of the images.
    pub fn page_for(&self, sub: &str) -> Option<Page> {
        std::iter::once(&self.favicon)
            .chain(&self.logo)
            .find(|asset| asset.sub == sub)
            .map(|asset| asset.page(IMMUTABLE))
    }

    /// The answer to `/favicon.ico`: the icon, under a name that does not change.
    pub fn favicon_ico(&self) -> Page {
        self.favicon.page(A_DAY)
    }
}

/// The bytes and type of the image file at `path` (`""`: none), at most
/// [`MAX_IMAGE_BYTES`]; an error naming `key` otherwise.
fn read_image(key: &str, path: &str) -> Result<Option<(Bytes, &'static str)>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    let fail = |why: String| format!("invalid value for `{key}` ({path}): {why}");
    let kind = image_content_type(path).ok_or_else(|| fail("not an image file".into()))?;
    let size = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if size > MAX_IMAGE_BYTES {
        return Err(fail(format!(
            "{size} bytes; at most {MAX_IMAGE_BYTES} are served"
        )));
    }
    let body = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    Ok(Some((Bytes::from(body), kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(favicon_file: &str, logo_file: &str) -> PortalConfig {
        PortalConfig {
            favicon_file: favicon_file.into(),
            logo_file: logo_file.into(),
            ..PortalConfig::default()
        }
    }

    #[test]
    fn images_are_served_under_names_that_change_with_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let logo = dir.path().join("Logo.PNG");
        std::fs::write(&logo, b"\x89PNG not really").unwrap();
        let assets = Assets::load(&portal("", logo.to_str().unwrap()), "<svg/>".into()).unwrap();
        let icon = &assets.favicon;
        assert!(
            icon.href().starts_with("/auth/static/favicon-"),
            "{}",
            icon.href()
        );
        assert!(icon.href().ends_with(".svg"));
        let logo = assets.logo.as_ref().unwrap();
        assert!(logo.href().starts_with("/auth/static/logo-") && logo.href().ends_with(".png"));
        let sub = logo.href().trim_start_matches("/auth");
        let page = assets.page_for(sub).unwrap();
        assert_eq!(page.content_type, "image/png");
        assert_eq!(&page.body[..], b"\x89PNG not really");
        assert!(page.headers.iter().any(|(_, v)| v.contains("immutable")));
        assert!(
            assets
                .page_for("/static/logo-0000000000000000.png")
                .is_none()
        );
        assert!(assets.page_for("/static/").is_none());
        let ico = assets.favicon_ico();
        assert_eq!(ico.content_type, "image/svg+xml");
        assert!(ico.headers.iter().any(|(_, v)| v == A_DAY));
    }

    #[test]
    fn a_missing_or_oversized_file_names_its_key() {
        let err = Assets::load(&portal("/nonexistent/icon.png", ""), String::new()).unwrap_err();
        assert!(err.contains("portal.favicon_file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.svg");
        std::fs::write(&big, vec![b' '; MAX_IMAGE_BYTES as usize + 1]).unwrap();
        let err = Assets::load(&portal("", big.to_str().unwrap()), String::new()).unwrap_err();
        assert!(
            err.contains("portal.logo_file") && err.contains("at most"),
            "{err}"
        );
    }
}
