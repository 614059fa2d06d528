//! Who is calling, and whether they may. Every request needs a bearer token (`Authorization: Bearer
//! hive_…`) except the reads the configuration makes public, the documentation and the dashboard's page
//! itself (which holds no data). A token's role decides what it may do:
//!
//! | route class | admin | operator | viewer | agent |
//! |---|---|---|---|---|
//! | reads (`GET`) | yes | yes | yes | its own agent record, assignments and history; the tasks assigned to it (one by one, or listed with `?agent_id=` its own) |
//! | commands (`POST`, `DELETE`) | yes | yes | no | heartbeat, drain or deregister itself; report on the tasks assigned to it |
//! | spawning agents, tokens | yes | no | no | no |
//!
//! No token, or one that is not valid: 401 `unauthenticated`. A valid token whose role may not: 403
//! `forbidden`. Grants are followed from the tokens bucket (a revocation reaches every API process within
//! milliseconds); a token the process has not seen yet is looked up in the bucket.
//!
//! The dashboard's page cannot send a header with its event stream: it trades the token for an
//! `HttpOnly`, `SameSite=Strict` cookie (`POST /api/v1/session`) that holds the token itself, so the
//! cookie's role is the token's, checked at every request (a revocation ends the session at once). A
//! command authenticated by the cookie must also carry `X-Hive-Csrf`, a value derived from the token
//! ([`csrf_of`]) that only the page's own script can read (`GET /api/v1/session`, same origin): a
//! cross-site form cannot set a header, and a cross-site script cannot read the answer that holds it
//! (no CORS), so a forged request never commands even where a browser ignores `SameSite`. The admin's
//! routes (tokens, spawning) never take the cookie.
//!
//! Long because the roles' table, the token check and the sign-in session (its cookie and CSRF proof)
//! share one caller type and one answer for a refusal; splitting them would copy both.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use hive_eventlog::tokens::{Grant, Role, Tokens, id_of};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, Code};

/// The cookie the dashboard's session keeps its token in.
pub const COOKIE: &str = "hive_token";

/// The header a command authenticated by [`COOKIE`] proves it comes from the dashboard's page with.
pub const CSRF_HEADER: &str = "x-hive-csrf";

/// The CSRF proof of a session made from `token`: derived from the secret (so it needs no state and
/// changes with the token), under a label of its own (so it is never the token's listed id, which is
/// the token's plain SHA-256).
pub fn csrf_of(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(b"hive dashboard csrf\0");
    digest.update(token.as_bytes());
    hex::encode(digest.finalize())
}

/// Compares without stopping at the first difference, so a guess learns nothing from the time taken.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// Every grant, by token id, followed from the tokens bucket.
#[derive(Clone)]
pub struct Grants {
    tokens: Tokens,
    known: Arc<RwLock<HashMap<String, Grant>>>,
}

impl Grants {
    /// Follows the bucket in the background: its watch delivers every current grant first, then each
    /// change. (No read of every grant at start, one request a token: until the watch has delivered a
    /// grant, [`Grants::check`] looks it up.)
    pub fn follow(tokens: Tokens) -> Self {
        let grants = Self {
            tokens,
            known: Arc::default(),
        };
        let following = grants.clone();
        tokio::spawn(async move {
            loop {
                match following.tokens.watch().await {
                    Ok(changes) => {
                        let mut changes = std::pin::pin!(changes);
                        while let Some((id, grant)) = changes.next().await {
                            following.set(id, grant);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot follow the tokens; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        grants
    }

    fn set(&self, id: String, grant: Option<Grant>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        match grant {
            Some(grant) => known.insert(id, grant),
            None => known.remove(&id),
        };
    }

    /// Issues a token with `grant`, usable here at once: the token and its id.
    pub async fn issue(&self, grant: Grant) -> Result<(String, String), ApiError> {
        let (token, id) = self.tokens.issue(&grant).await?;
        self.set(id.clone(), Some(grant));
        Ok((token, id))
    }

    /// Revokes token id `id` (here at once); false when there was none.
    pub async fn revoke(&self, id: &str) -> Result<bool, ApiError> {
        let revoked = self.tokens.revoke(id).await?;
        self.set(id.to_owned(), None);
        Ok(revoked)
    }

    /// Revokes every token of `agent` (once it is deregistered, nothing may act as it): how many. The
    /// bucket is listed, not this process's cache (another process may have issued one a moment ago).
    pub async fn revoke_agent(&self, agent: Uuid) -> Result<usize, ApiError> {
        let mut revoked = 0;
        for (id, grant) in self.tokens.all().await? {
            if grant.agent_id == Some(agent) {
                self.revoke(&id).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Every token's id and grant.
    pub async fn all(&self) -> Result<Vec<(String, Grant)>, ApiError> {
        Ok(self.tokens.all().await?)
    }

    /// The grant of `token`, if it is valid.
    pub async fn check(&self, token: &str) -> Result<Option<Grant>, ApiError> {
        let id = id_of(token);
        let known = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        match known {
            Some(grant) => Ok(Some(grant)),
            // Issued by another API process a moment ago, or not a token at all.
            None => Ok(self.tokens.grant(&id).await?),
        }
    }
}

/// The caller, for handlers: present on every route that needs a token.
#[derive(Clone, Debug)]
pub struct Caller(pub Grant);

impl Caller {
    /// The agent this caller is, when it holds an agent token.
    pub fn agent(&self) -> Option<Uuid> {
        (self.0.role == Role::Agent)
            .then_some(self.0.agent_id)
            .flatten()
    }
}

/// The agent the caller is, when it holds an agent token (`None` for every other caller).
pub struct CallerAgent(pub Option<Uuid>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.extensions.get::<Caller>().and_then(Caller::agent),
        ))
    }
}

/// What a route asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Nothing.
    Public,
    /// A token that may read.
    Read,
    /// A token that may issue commands.
    Command,
    /// An admin token.
    Admin,
}

/// The class of route `template` (as routed) for `method`, given the configured public reads.
fn need(method: &Method, template: &str, public: &[String]) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let always_public = [
        "/",
        "/api/v1",
        "/api/v1/",
        "/api/v1/openapi.json",
        "/api/v1/asyncapi.json",
        "/dashboard",
    ];
    // Signing in; reading the session (`GET`) needs the token or cookie it reads.
    if template == "/api/v1/session" && *method == Method::POST {
        return Need::Public;
    }
    // Spawning (one agent, or a 2.0 team) runs commands on the host.
    if template.starts_with("/api/v1/tokens")
        || template.ends_with("/agents/spawn")
        || template == "/api/agents/activate"
    {
        return Need::Admin;
    }
    if read
        && (always_public.contains(&template)
            || template.starts_with("/api/v1/docs")
            || public.iter().any(|p| p == template))
    {
        return Need::Public;
    }
    if read { Need::Read } else { Need::Command }
}

/// Who may call route `template` with `method`, in words, for the API's documentation: `None` when
/// anyone may (a token sent anyway is still checked).
pub fn requirement(method: &Method, template: &str, public: &[String]) -> Option<String> {
    let needs = match need(method, template, public) {
        Need::Public => return None,
        Need::Admin => return Some("Needs an admin token.".into()),
        Need::Read => "Needs a token that may read (viewer, operator or admin)",
        Need::Command => "A command: needs an operator or admin token",
    };
    let agent = match (agent_may(method, template), *method == Method::GET) {
        (None, _) => "",
        (Some(AgentScope::Itself), _) => ", or the agent's own token",
        (Some(AgentScope::ItsTask), true) => ", or the token of the agent the task is assigned to",
        (Some(AgentScope::ItsTask), false) => {
            ", or the assigned agent's own token for its reports (accept, start, progress, \
             complete, fail, release)"
        }
        (Some(AgentScope::ItsTaskList), _) => ", or an agent's token with `?agent_id=` its own",
    };
    Some(format!("{needs}{agent}."))
}

/// The routes an agent token may use, and only for its own agent (`{id}`), or for a task (handlers
/// check that it is assigned to the agent).
fn agent_may(method: &Method, template: &str) -> Option<AgentScope> {
    match (method.as_str(), template) {
        (
            "GET",
            "/api/v1/agents/{id}"
            | "/api/v1/agents/{id}/assignments"
            | "/api/v1/agents/{id}/events"
            | "/api/v1/agents/{id}/tasks"
            | "/api/agents/{id}/status",
        )
        | ("POST", "/api/v1/agents/{id}/{action}")
        | ("DELETE", "/api/v1/agents/{id}") => Some(AgentScope::Itself),
        ("GET", "/api/v1/tasks/{id}") | ("POST", "/api/v1/tasks/{id}/{action}") => {
            Some(AgentScope::ItsTask)
        }
        ("GET", "/api/v1/tasks") => Some(AgentScope::ItsTaskList),
        _ => None,
    }
}

/// What an agent token's route is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentScope {
    /// The agent itself: `{id}` must be its own.
    Itself,
    /// A task: the handler checks it is assigned to the agent.
    ItsTask,
    /// The list of its own tasks: `?agent_id=` must name it (a restarted runtime gives back what its
    /// previous process held).
    ItsTaskList,
}

/// The value of `{name}` in `path`, routed by `template`.
fn param<'a>(template: &str, path: &'a str, name: &str) -> Option<&'a str> {
    let wanted = format!("{{{name}}}");
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == wanted)
        .map(|(_, value)| value)
}

/// How a request presented its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// `Authorization: Bearer`.
    Bearer,
    /// The dashboard's cookie.
    Cookie,
}

/// The token a request carries: its bearer token, or the dashboard's cookie.
fn presented(headers: &HeaderMap) -> Result<Option<(String, Via)>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    Code::Unauthenticated,
                    "Authorization must be `Bearer <token>`",
                )
            })?;
        return Ok(Some((token.trim().to_owned(), Via::Bearer)));
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| (value.to_owned(), Via::Cookie));
    Ok(cookie)
}

/// The CSRF proof of the token `headers` present (bearer or cookie), for `GET /api/v1/session`.
pub fn csrf_presented(headers: &HeaderMap) -> Option<String> {
    presented(headers)
        .ok()
        .flatten()
        .map(|(token, _)| csrf_of(&token))
}

/// Refuses a command the dashboard's cookie authenticated unless it carries the session's CSRF proof;
/// the admin's routes never take the cookie.
fn check_cookie_command(request: &Request, token: &str, need: Need) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) || need == Need::Public {
        return Ok(());
    }
    if need == Need::Admin {
        return Err(ApiError::new(
            Code::Forbidden,
            "an admin's route takes a bearer token, never the dashboard's cookie",
        ));
    }
    let proof = request
        .headers()
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if same(proof, csrf_of(token).as_bytes()) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Forbidden,
        "a command sent with the dashboard's cookie needs its X-Hive-Csrf header \
         (`csrf` of GET /api/v1/session)",
    ))
}

/// The middleware: authenticates the caller, checks the route's class against its role, and hands
/// the handlers a [`Caller`].
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let need = need(&method, &template, &state.config.public_reads);
    let grant = match presented(request.headers())? {
        Some((token, via)) => {
            let grant = state.grants.check(&token).await?;
            if grant.is_some() && via == Via::Cookie {
                check_cookie_command(&request, &token, need)?;
            }
            grant
        }
        None => None,
    };
    let Some(grant) = grant else {
        if need == Need::Public {
            return Ok(next.run(request).await);
        }
        let message = if request.headers().contains_key(header::AUTHORIZATION) {
            "the token is not valid (unknown or revoked)"
        } else {
            "this route needs a token: Authorization: Bearer <token>"
        };
        return Err(ApiError::new(Code::Unauthenticated, message));
    };
    let forbidden = |why: String| Err(ApiError::new(Code::Forbidden, why));
    match (grant.role, need) {
        (_, Need::Public) | (Role::Admin, _) | (Role::Operator, Need::Read | Need::Command) => {}
        (Role::Viewer, Need::Read) => {}
        (Role::Agent, Need::Read | Need::Command) => match agent_may(&method, &template) {
            Some(AgentScope::Itself) => {
                let own = grant.agent_id.map(|a| a.to_string());
                if param(&template, request.uri().path(), "id") != own.as_deref() {
                    return forbidden("an agent token is good only for its own agent".into());
                }
            }
            Some(AgentScope::ItsTask) => {}
            Some(AgentScope::ItsTaskList) => {
                let own = grant.agent_id.map(|a| a.to_string());
                let asked = request.uri().query().and_then(|q| {
                    q.split('&')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(name, _)| *name == "agent_id")
                        .map(|(_, value)| value.to_owned())
                });
                if asked.is_none() || asked != own {
                    return forbidden(
                        "an agent token lists only its own tasks (?agent_id=)".into(),
                    );
                }
            }
            None => {
                return forbidden(format!(
                    "an agent token cannot {method} {template}: only its own agent and its tasks"
                ));
            }
        },
        (role, need) => {
            let what = match need {
                Need::Admin => "needs an admin token",
                Need::Command => "is a command: it needs an operator or admin token",
                _ => "needs a token that may read",
            };
            return forbidden(format!("{method} {template} {what}; this token is {role}"));
        }
    }
    request.extensions_mut().insert(Caller(grant));
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_classes() {
        let public = vec!["/livez".to_owned(), "/health".to_owned()];
        assert_eq!(need(&Method::GET, "/livez", &public), Need::Public);
        assert_eq!(need(&Method::GET, "/dashboard", &public), Need::Public);
        assert_eq!(need(&Method::GET, "/status", &public), Need::Read);
        assert_eq!(need(&Method::POST, "/api/v1/tasks", &public), Need::Command);
        assert_eq!(
            need(&Method::POST, "/api/v1/agents/spawn", &public),
            Need::Admin
        );
        assert_eq!(
            need(&Method::POST, "/api/agents/spawn", &public),
            Need::Admin
        );
        assert_eq!(
            need(&Method::POST, "/api/agents/activate", &public),
            Need::Admin
        );
        assert_eq!(need(&Method::GET, "/api/v1/tokens", &public), Need::Admin);
        assert_eq!(
            need(&Method::POST, "/api/v1/session", &public),
            Need::Public
        );
        assert_eq!(need(&Method::GET, "/api/v1/session", &public), Need::Read);
        assert_eq!(
            need(&Method::GET, "/status", &["/status".to_owned()]),
            Need::Public
        );
    }

    #[test]
    fn the_csrf_proof_is_the_tokens_own_and_never_its_listed_id() {
        let token = "hive_0123";
        assert_eq!(csrf_of(token), csrf_of(token));
        assert_ne!(csrf_of(token), csrf_of("hive_0124"));
        assert_ne!(csrf_of(token), hive_eventlog::tokens::id_of(token));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd") && !same(b"abc", b"ab") && !same(b"", b"a"));
    }

    #[test]
    fn path_parameters_are_read_from_the_template() {
        let id = "0190f2a4-0000-7000-8000-000000000001";
        let path = format!("/api/v1/agents/{id}/heartbeat");
        assert_eq!(param("/api/v1/agents/{id}/{action}", &path, "id"), Some(id));
        assert_eq!(
            param("/api/v1/agents/{id}/{action}", &path, "action"),
            Some("heartbeat")
        );
        assert_eq!(param("/status", "/status", "id"), None);
    }
}
