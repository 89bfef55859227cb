//! `POST /v1/auth/token`: the OAuth2 token endpoint. People use the password grant, services
//! the client credentials grant (form fields or HTTP Basic). Every attempt, granted or not, is
//! in the audit log under the name that was tried.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;

use crate::api::{TokenRequest, TokenResponse};

use crate::error::{ApiError, ErrorBody};
use crate::handlers::parse_json;
use crate::middleware::{AuditNote, ClientAddress};
use crate::state::AppState;
use prodcat_catalogue::throttle::{self, ThrottlePolicy};
use prodcat_catalogue::users::{
    decoy_hash, get_user, is_valid_name, verify_password, MAX_SECRET_BYTES,
};
use prodcat_catalogue::UserKind;

fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut request: TokenRequest = if content_type.starts_with("application/json") {
        parse_json(body)?
    } else if content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.is_empty()
    {
        serde_urlencoded_like(body)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the token request as application/x-www-form-urlencoded or application/json",
        ));
    };
    // Client credentials may come as HTTP Basic (RFC 6749 section 2.3.1).
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some((scheme, encoded)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        ApiError::invalid("the Basic authorization header is not valid")
                    })?;
                if let Some((id, secret)) = decoded.split_once(':') {
                    request.client_id.get_or_insert_with(|| id.to_string());
                    request
                        .client_secret
                        .get_or_insert_with(|| secret.to_string());
                }
            }
        }
    }
    Ok(request)
}

/// Form decoding through the URL parser's query-pair decoder (no extra dependency).
fn serde_urlencoded_like(body: &[u8]) -> Result<TokenRequest, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::invalid("the form body is not UTF-8"))?;
    let mut request = TokenRequest::default();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_decode(&text.replace('+', " "))
                .ok_or_else(|| ApiError::invalid("the form body has an invalid percent escape"))
        };
        let value = Some(decode(value)?);
        match decode(key)?.as_str() {
            "grant_type" => request.grant_type = value,
            "username" => request.username = value,
            "password" => request.password = value,
            "client_id" => request.client_id = value,
            "client_secret" => request.client_secret = value,
            "scope" => request.scope = value,
            _ => {}
        }
    }
    Ok(request)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn invalid_grant() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "the name or the password is wrong",
    )
}

/// A 429 for a throttled sign-in, with the wait in `Retry-After`.
fn too_many(block_ms: i64) -> Response {
    let seconds = ((block_ms + 999) / 1000).max(1) as u64;
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many failed sign-ins; try again in {seconds} s"),
    );
    error.retry_after = Some(seconds);
    error.into_response()
}

/// The 429 answer when one of the keys is blocked now.
async fn blocked(state: &AppState, keys: &[String]) -> Result<Option<Response>, ApiError> {
    let mut longest = 0;
    for key in keys {
        longest = longest.max(throttle::blocked_for_ms(&state.platform.database, key).await?);
    }
    Ok((longest > 0).then(|| too_many(longest)))
}

fn refused_with(mut response: Response, name: &str, detail: &str) -> Response {
    let actor = if is_valid_name(name) {
        name
    } else {
        "invalid name"
    };
    response.extensions_mut().insert(AuditNote {
        actor: Some(actor.to_string()),
        detail: detail.to_string(),
    });
    response
}

fn refused(error: ApiError, name: &str, detail: &str) -> Response {
    refused_with(error.into_response(), name, detail)
}

/// Exchange credentials for an access token (OAuth2 password or client credentials grant).
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "security",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A signed, expiring bearer token", body = TokenResponse),
        (status = 400, description = "Unsupported grant or missing fields", body = ErrorBody),
        (status = 401, description = "Wrong credentials or disabled account", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins for this account or address; see Retry-After", body = ErrorBody),
        (status = 503, description = "Too many sign-ins at once; see Retry-After", body = ErrorBody),
    ),
)]
pub async fn issue_token(
    State(state): State<AppState>,
    address: Option<axum::Extension<ClientAddress>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let address = address.map(|a| a.0).unwrap_or(ClientAddress(None));
    let request = match parse_request(&headers, &body) {
        Ok(request) => request,
        Err(error) => return refused(error, "unknown", "malformed token request"),
    };
    let (name, secret, kind) = match request.grant_type.as_deref() {
        Some("password") => (request.username, request.password, UserKind::Person),
        Some("client_credentials") => (request.client_id, request.client_secret, UserKind::Service),
        Some(other) => {
            return refused(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    format!(
                        "grant_type {other:?} is not supported: use password or client_credentials"
                    ),
                ),
                "unknown",
                "unsupported grant",
            )
        }
        None => {
            return refused(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type is missing: use password or client_credentials",
                ),
                "unknown",
                "no grant type",
            )
        }
    };
    let (Some(name), Some(secret)) = (name, secret) else {
        return refused(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the credentials are missing (username and password, or client_id and client_secret)",
            ),
            "unknown",
            "missing credentials",
        );
    };
    // Shapes are checked before anything costly happens or is written down: a name that
    // cannot exist is a wrong credential, and the audit log never holds what was typed.
    if !is_valid_name(&name) || secret.len() > MAX_SECRET_BYTES {
        return refused(invalid_grant(), "invalid name", "malformed credentials");
    }
    let throttle_keys = vec![
        format!("account:{name}"),
        format!("address:{}", address.text()),
    ];
    match blocked(&state, &throttle_keys).await {
        Ok(Some(response)) => return refused_with(response, &name, "throttled"),
        Ok(None) => {}
        Err(error) => return error.into_response(),
    }
    let user = match get_user(&state.platform.database, &name).await {
        Ok(user) => user,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let stored_hash = user
        .as_ref()
        .map(|user| user.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_string());
    // At most one password check per core runs at once; the others wait their turn briefly.
    let permit = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.password_checks.acquire(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many sign-ins at once; try again in a second",
            );
            error.retry_after = Some(1);
            return refused(error, &name, "password checks saturated");
        }
    };
    let matches = tokio::task::spawn_blocking(move || verify_password(&secret, &stored_hash))
        .await
        .unwrap_or(false);
    drop(permit);
    let Some(user) = user.filter(|_| matches) else {
        let recorded = match throttle::record_failure(
            &state.platform.database,
            &throttle_keys[..1],
            &ThrottlePolicy::default(),
        )
        .await
        {
            Ok(account_block) => throttle::record_failure(
                &state.platform.database,
                &throttle_keys[1..],
                &ThrottlePolicy::per_address(),
            )
            .await
            .map(|address_block| account_block.max(address_block)),
            Err(error) => Err(error),
        };
        return match recorded {
            Ok(block_ms) if block_ms > 0 => {
                refused_with(too_many(block_ms), &name, "wrong credentials; throttled")
            }
            Ok(_) => refused(invalid_grant(), &name, "wrong credentials"),
            Err(error) => ApiError::from(error).into_response(),
        };
    };
    if let Err(error) = throttle::clear(&state.platform.database, &throttle_keys[0]).await {
        tracing::warn!(%error, "clearing the sign-in throttle failed");
    }
    if user.disabled {
        return refused(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "this account is disabled",
            ),
            &name,
            "disabled account",
        );
    }
    if user.kind != kind {
        return refused(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                match user.kind {
                    UserKind::Person => "people use grant_type=password",
                    UserKind::Service => "service clients use grant_type=client_credentials",
                },
            ),
            &name,
            "wrong grant for the account kind",
        );
    }
    let token = state
        .signer
        .issue_versioned(&user.name, user.role, user.token_version);
    let mut response = (
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenResponse {
            access_token: token,
            token_type: "bearer".to_string(),
            expires_in: state.signer.lifetime().as_secs(),
            role: user.role.as_str().to_string(),
        }),
    )
        .into_response();
    response.extensions_mut().insert(AuditNote {
        actor: Some(user.name.clone()),
        detail: format!("token issued ({})", user.role.as_str()),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_decoded() {
        let request =
            serde_urlencoded_like(b"grant_type=password&username=ann%40shop&password=a+b%26c")
                .unwrap();
        assert_eq!(request.grant_type.as_deref(), Some("password"));
        assert_eq!(request.username.as_deref(), Some("ann@shop"));
        assert_eq!(request.password.as_deref(), Some("a b&c"));
        assert!(serde_urlencoded_like(b"password=%zz").is_err());
    }
}
