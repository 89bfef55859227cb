//! Request middleware: authentication (the bearer token is checked once and the caller stored
//! in the request), per-client rate limits (429 with `Retry-After`), timeouts, request metrics,
//! JSON bodies for every error, and the audit log of writes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Authentication;
use crate::error::ApiError;
use crate::state::AppState;
use prodcat_catalogue::audit::{self, AuditEntry};

/// Per-client token buckets.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_second` 0 disables the limit.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's token for `client`; when there is none, the seconds to wait.
    pub fn check(&self, client: &str) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > 50_000 {
            let idle = Duration::from_secs(120);
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < idle);
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

/// The address of the client a request comes from: the connection's peer, or, when the peer
/// is a trusted proxy, the last address in `X-Forwarded-For` that is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

impl ClientAddress {
    pub fn text(&self) -> String {
        self.0
            .map(|address| address.to_string())
            .unwrap_or_else(|| "unknown".to_string())
    }
}

/// Resolves the client's address once (see [`ClientAddress`]) and stores it in the request.
pub async fn client_address(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let address = resolve_client(peer, request.headers(), &state.settings.trusted_proxies);
    request.extensions_mut().insert(ClientAddress(address));
    next.run(request).await
}

/// The client behind `peer`: `X-Forwarded-For` is read right to left only while the hops are
/// trusted proxies; anybody else's header is ignored.
pub fn resolve_client(
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    let mut client = peer?;
    if !is_trusted(&client) {
        return Some(client);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    for hop in forwarded.into_iter().rev() {
        client = hop;
        if !is_trusted(&hop) {
            break;
        }
    }
    Some(client)
}

fn client_address_of(request: &Request) -> String {
    request
        .extensions()
        .get::<ClientAddress>()
        .map(ClientAddress::text)
        .unwrap_or_else(|| "unknown".to_string())
}

/// Headers every answer carries: no MIME sniffing (an uploaded photo is never run as a page),
/// no framing by other sites.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    response
}

/// Verifies the bearer token (if any) and stores the result for the [`crate::Caller`] extractor.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut authentication = Authentication::of_headers(request.headers(), &state.signer);
    // The web UI's pages carry the same token in their session cookie (and only they do).
    if matches!(authentication, Authentication::Missing) && request.uri().path().starts_with("/ui")
    {
        if let Some(token) = crate::ui::cookie(request.headers(), crate::ui::SESSION_COOKIE) {
            authentication = match state.signer.verify(&token) {
                Ok(claims) => Authentication::Verified(claims),
                Err(problem) => Authentication::Invalid(problem),
            };
        }
    }
    if let Authentication::Verified(claims) = &authentication {
        authentication = match state
            .revocation
            .check(
                &state.platform.database,
                &claims.sub,
                claims.role,
                claims.ver,
            )
            .await
        {
            Ok(()) => Authentication::Valid(crate::auth::Caller {
                name: claims.sub.clone(),
                role: claims.role,
            }),
            Err(problem) => Authentication::Invalid(problem),
        };
    }
    request.extensions_mut().insert(authentication);
    next.run(request).await
}

/// Limits each client (the token's subject, else the address) to the configured rate.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = match request
        .extensions()
        .get::<Authentication>()
        .and_then(Authentication::caller)
    {
        Some(caller) => format!("user:{}", caller.name),
        None => format!("address:{}", client_address_of(&request)),
    };
    match state.limiter.check(&key) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            metrics::counter!("prodcat_http_rate_limited_total").increment(1);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this client; retry in {wait} s"),
            );
            error.retry_after = Some(wait);
            error.into_response()
        }
    }
}

/// Answers 503 with a timeout error when a request takes longer than the configured limit.
pub async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.settings.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("prodcat_http_timeouts_total").increment(1);
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {:.1} s and was stopped",
                    limit.as_secs_f64()
                ),
            );
            error.retry_after = Some(1);
            error.into_response()
        }
    }
}

/// Counts requests by route, method and status, and times them.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // Label values come from closed sets: a made-up method or path adds no series.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "prodcat_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!("prodcat_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn error_type_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        429 => "rate_limited",
        500..=599 => "internal",
        _ => "error",
    }
}

/// Gives every error answer a JSON body (`{"error", "errorType"}`), including those produced
/// outside the handlers (unknown method, limits of lower layers).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    // JSON errors stay as they are; so do the web UI's error pages.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if is_json || is_page {
        return response;
    }
    let message = match status.as_u16() {
        405 => "this method is not allowed on this route".to_string(),
        413 => "the request body is larger than the limit".to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let mut error = ApiError::new(status, error_type_of(status), message);
    if let Some(value) = response.headers().get(header::RETRY_AFTER) {
        error.retry_after = value.to_str().ok().and_then(|text| text.parse().ok());
    }
    let mut rewritten = error.into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        rewritten.headers_mut().insert(header::ALLOW, allow.clone());
    }
    rewritten
}

/// A note a handler attaches to its response for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// Who acted, when the request had no token (the token endpoint names the user).
    pub actor: Option<String>,
    pub detail: String,
}

/// Routes whose POSTs are computations, not writes.
fn is_audited(method: &Method, route: &str) -> bool {
    let writes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    writes && !matches!(route, "/v1/predict" | "/v1/predict/batch")
}

/// Records every write in the audit log after it was answered.
pub async fn audit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let Some(route) = route.filter(|route| is_audited(request.method(), route)) else {
        return next.run(request).await;
    };
    let caller = request
        .extensions()
        .get::<Authentication>()
        .and_then(Authentication::caller)
        .cloned();
    let action = format!("{} {route}", request.method());
    let target = request.uri().path().to_string();
    let address = client_address_of(&request);
    let response = next.run(request).await;
    let note = response.extensions().get::<AuditNote>().cloned();
    let entry = AuditEntry {
        id: 0,
        at_ms: 0,
        actor: caller
            .as_ref()
            .map(|c| c.name.clone())
            .or_else(|| note.as_ref().and_then(|n| n.actor.clone()))
            .unwrap_or_else(|| "anonymous".to_string()),
        role: caller
            .as_ref()
            .map(|c| c.role.as_str().to_string())
            .unwrap_or_default(),
        action,
        target,
        detail: note.map(|n| n.detail).unwrap_or_default(),
        client_address: address,
        status: i64::from(response.status().as_u16()),
    };
    if let Err(error) = audit::record(&state.platform.database, &entry).await {
        tracing::error!(%error, action = %entry.action, "writing the audit log failed");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_configured_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        assert_eq!(limiter.check("a"), Err(1));
        assert!(limiter.check("b").is_ok(), "clients have their own bucket");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check("a").is_ok());
        let unlimited = RateLimiter::new(0.0, 0.0);
        for _ in 0..10_000 {
            assert!(unlimited.check("a").is_ok());
        }
    }

    #[test]
    fn predictions_are_not_audited_but_writes_are() {
        assert!(!is_audited(&Method::POST, "/v1/predict"));
        assert!(!is_audited(&Method::GET, "/v1/products"));
        assert!(is_audited(&Method::POST, "/v1/products"));
        assert!(is_audited(&Method::DELETE, "/v1/products/{id}"));
        assert!(is_audited(&Method::POST, "/v1/auth/token"));
    }
}
