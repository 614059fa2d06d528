//! Tokens (admin): issue, list, revoke; and `/api/v1/session`, where the dashboard's page trades a
//! token for a cookie and learns what it may do and the CSRF proof its commands carry
//! ([`crate::auth`]).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hive_eventlog::tokens::{Grant, Role};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{COOKIE, Caller};
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{self, Path};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, issue))
        .routes(routes!(revoke))
        .routes(routes!(session, session_info))
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Issue {
    /// admin, operator or viewer (agents get theirs when they are registered or spawned).
    role: String,
    /// Who holds it.
    name: String,
}

/// A token just issued: the only time it is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Issued {
    /// `hive_` and 64 hex digits.
    token: String,
    /// Its id (the SHA-256 of the token), to revoke it by.
    token_id: String,
    role: Role,
    name: String,
}

/// A token's id and grant (never the token).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TokenView {
    token_id: String,
    role: Role,
    /// Who holds it.
    name: String,
    /// The agent an agent token belongs to.
    agent_id: Option<uuid::Uuid>,
    issued_at: chrono::DateTime<chrono::Utc>,
}

/// Every token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Tokens {
    items: Vec<TokenView>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", summary = "Issue a token (admin); it is shown once", request_body = Issue, responses((status = 201, description = "Issued", body = Issued, links(("revoke" = (operation_id = "revoke", parameters(("id" = "$response.body#/token_id")))))), (status = 422, description = "an unknown role, an agent's, or a name that is not 1 to 100 characters", body = ErrorBody)))]
async fn issue(
    State(state): State<AppState>,
    extract::Json(body): extract::Json<Issue>,
) -> ApiResult<Response> {
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| ApiError::invalid("role", e))?;
    if role == Role::Agent {
        return Err(ApiError::invalid(
            "role",
            "an agent's token is issued when it is registered or spawned",
        ));
    }
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    let (token, id) = state.grants.issue(Grant::new(role, name)).await?;
    Ok((
        StatusCode::CREATED,
        Json(Issued {
            token,
            token_id: id,
            role,
            name: name.to_owned(),
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens", summary = "Every token's id and grant (admin); never the tokens", responses((status = 200, body = Tokens)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<Tokens>> {
    let items = state
        .grants
        .all()
        .await?
        .into_iter()
        .map(|(id, g)| TokenView {
            token_id: id,
            role: g.role,
            name: g.name,
            agent_id: g.agent_id,
            issued_at: g.issued_at,
        })
        .collect();
    Ok(Json(Tokens { items }))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", summary = "Revoke a token (admin)", params(("id" = String, Path, description = "the token's id")), responses((status = 204, description = "Revoked"), (status = 404, description = "no such token", body = ErrorBody)))]
async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("token", id));
    }
    if state.grants.revoke(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token", id))
    }
}

/// `POST /api/v1/session`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Session {
    /// A token of any role.
    token: String,
}

#[utoipa::path(post, path = "/api/v1/session", tag = "tokens", summary = "Trade a token for the dashboard's cookie", description = "The cookie holds the token, so it may do what the token's role may: read, and for an operator's or admin's token command (cancel, retry, requeue, drain: not the admin's routes), each command with the `X-Hive-Csrf` header that `GET /api/v1/session` gives.", request_body = Session, responses((status = 204, description = "The cookie is set", headers(("Set-Cookie" = String, description = "`hive_token=…; HttpOnly; SameSite=Strict; Path=/`"))), (status = 401, description = "unauthenticated: the token is not valid", body = ErrorBody)))]
async fn session(
    State(state): State<AppState>,
    extract::Json(body): extract::Json<Session>,
) -> ApiResult<Response> {
    let token = body.token.trim();
    let valid = token.len() <= 200
        && token.bytes().all(|b| b.is_ascii_graphic())
        && state.grants.check(token).await?.is_some();
    if !valid {
        return Err(ApiError::new(
            Code::Unauthenticated,
            "the token is not valid",
        ));
    }
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|_| ApiError::new(Code::Unauthenticated, "the token is not valid"))?,
    );
    Ok(response)
}

/// `GET /api/v1/session`: who the session is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionInfo {
    /// The token's role.
    role: Role,
    /// Who holds it.
    name: String,
    /// Whether it may command (cancel, retry, requeue a task, drain an agent): an operator's or an
    /// admin's.
    may_command: bool,
    /// The value of the `X-Hive-Csrf` header that a command sent with the session's cookie carries.
    csrf: String,
}

#[utoipa::path(get, path = "/api/v1/session", tag = "tokens", summary = "The session: its role, and the CSRF proof its commands carry", description = "Answers for the dashboard's cookie or a bearer token (an agent's token has no session). Only a page of the API's own origin can read the answer (no CORS), which is what makes `csrf` a proof.", responses((status = 200, body = SessionInfo), (status = 401, description = "unauthenticated: no valid token or cookie", body = ErrorBody)))]
async fn session_info(
    axum::Extension(Caller(grant)): axum::Extension<Caller>,
    headers: HeaderMap,
) -> ApiResult<Json<SessionInfo>> {
    let csrf = crate::auth::csrf_presented(&headers)
        .ok_or_else(|| ApiError::new(Code::Unauthenticated, "no session: sign in with a token"))?;
    Ok(Json(SessionInfo {
        role: grant.role,
        name: grant.name,
        may_command: matches!(grant.role, Role::Admin | Role::Operator),
        csrf,
    }))
}
