//! The HTTP client of identity providers: discovery, JWKS, token requests and GitHub's APIs.
//! `openidconnect` sends its requests through [`Http::send`]; no redirect is followed (a
//! token endpoint that redirects is refused, RFC 6749 §3.2), answers are capped in size and
//! every request in time.

use std::time::Duration;

/// The longest a provider may take to answer one request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a provider (a discovery document, a JWKS, a token response).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a request to a provider failed (transport, size); never carries a body or a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// A reqwest client with the limits above.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client that follows no redirect and gives up after [`TIMEOUT`].
    pub fn new() -> Result<Self, HttpError> {
        Self::with_timeout(TIMEOUT)
    }

    /// The same, giving up after `timeout` (`check-config` waits less than a sign-in).
    pub fn with_timeout(timeout: Duration) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client })
    }

    /// The underlying client, for GitHub's API calls.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends one request for `openidconnect` (its `AsyncHttpClient` is any such function).
    pub async fn send(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError(transport_error(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response).await?;
        let mut answer = http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// Reads a body up to [`MAX_BODY_BYTES`].
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError(transport_error(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(HttpError("the provider's answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error without its URL (which may carry a code in its query).
pub fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    match e.url() {
        Some(url) => format!("{kind} ({})", url.origin().ascii_serialization()),
        None => kind.to_owned(),
    }
}
