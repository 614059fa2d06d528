//! Every route, one module per resource.

pub mod agents;
pub mod assignments;
pub mod compat;
pub mod contract;
pub mod dashboard;
pub mod dead_letters;
pub mod events;
pub mod health;
pub mod history;
pub mod lifecycle;
pub mod projections;
pub mod projects;
pub mod spawn;
pub mod stream;
pub mod system;
pub mod tasks;
pub mod tokens;
pub mod travel;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, Code};
use hive_eventlog::Committed;

/// The API's description, completed by the routes' own annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Hive",
        description = "Control plane for fleets of autonomous agents. Every change is an event in NATS \
JetStream; reads come from PostgreSQL read models (send `Hive-Min-Seq` to read your writes). Every error \
is `{\"error\": {\"code\", \"message\"}}`."
    ),
    // Named here: the schemas that parameters name (their references are not collected), and those
    // that no annotation's body reaches (an assignment is pushed as a server-sent event).
    components(schemas(
        crate::error::ErrorBody,
        crate::views::Order,
        hive_events::AggregateKind,
        hive_events::agent::AgentStatus,
        hive_events::wire::TaskAction,
        hive_events::wire::AgentAction,
        hive_events::wire::Assignment,
        hive_events::wire::Stop
    ))
)]
struct ApiDoc;

/// Every documented route, and the OpenAPI document that describes exactly them, as their annotations
/// do ([`crate::openapi::document`] adds what the layers around them do).
pub fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(system::routes())
        .merge(contract::routes())
        .merge(health::routes())
        .merge(agents::routes())
        .merge(tasks::routes())
        .merge(projects::routes())
        .merge(projections::routes())
        .merge(history::routes())
        .merge(dead_letters::routes())
        .merge(events::routes())
        .merge(lifecycle::routes())
        .merge(assignments::routes())
        .merge(compat::routes())
        .merge(dashboard::routes())
        .merge(spawn::routes())
        .merge(stream::routes())
        .merge(tokens::routes())
        .merge(crate::metrics::routes())
        .split_for_parts()
}

/// All routes, `GET /api/v1/openapi.json` (for a server whose public reads are `public`) and the
/// interactive docs at `/api/v1/docs`; unknown paths and methods answer in the API's error format.
pub fn all(public: &[String]) -> Router<AppState> {
    let (routes, openapi) = documented();
    let docs: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new("/api/v1/docs")
        .external_url_unchecked(
            "/api/v1/openapi.json",
            crate::openapi::document(openapi, public),
        )
        .into();
    routes
        .merge(docs)
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this route does not take that method",
            )
        })
}

/// The answer to a command: `status` with `body`, marked when it repeats a first answer.
pub fn committed<T: Serialize>(status: StatusCode, committed: Committed, body: T) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if committed.duplicate {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    /// Routes are registered only through `utoipa_axum::routes!`, which takes each one's path from its
    /// `#[utoipa::path]`: a plain `.route(` would serve a route the OpenAPI document does not name.
    #[test]
    fn no_route_bypasses_the_openapi_document() {
        let sources = [
            ("agents.rs", include_str!("agents.rs")),
            ("assignments.rs", include_str!("assignments.rs")),
            ("compat.rs", include_str!("compat.rs")),
            ("contract.rs", include_str!("contract.rs")),
            ("dashboard.rs", include_str!("dashboard.rs")),
            ("dead_letters.rs", include_str!("dead_letters.rs")),
            ("events.rs", include_str!("events.rs")),
            ("health.rs", include_str!("health.rs")),
            ("history.rs", include_str!("history.rs")),
            ("lifecycle.rs", include_str!("lifecycle.rs")),
            ("projections.rs", include_str!("projections.rs")),
            ("projects.rs", include_str!("projects.rs")),
            ("spawn.rs", include_str!("spawn.rs")),
            ("stream.rs", include_str!("stream.rs")),
            ("system.rs", include_str!("system.rs")),
            ("tasks.rs", include_str!("tasks.rs")),
            ("tokens.rs", include_str!("tokens.rs")),
            ("../metrics.rs", include_str!("../metrics.rs")),
        ];
        for (name, source) in sources {
            let undocumented = source
                .lines()
                .filter(|l| l.contains(".route(\"") && !l.contains("standalone"))
                .count();
            // metrics.rs's standalone router (a process without the API) is the one exception.
            let allowed = usize::from(name == "../metrics.rs");
            assert!(
                undocumented <= allowed,
                "{name} registers a route with .route("
            );
        }
        // A command's headers are documented where its handler takes them.
        for (name, source) in sources {
            for annotated in source.split("#[utoipa::path(").skip(1) {
                let (annotation, rest) = annotated.split_once(")]\n").unwrap();
                let signature = rest.split_once('{').unwrap().0;
                if signature.contains("Command") {
                    assert!(
                        annotation.contains("Command)") || annotation.contains("Command,"),
                        "{name}: a handler takes Command without params(Command):\n{signature}"
                    );
                }
            }
        }
        let modules = include_str!("mod.rs");
        for module in modules.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
            let module = module.trim_end_matches(';');
            if module != "travel" {
                assert!(
                    sources.iter().any(|(n, _)| *n == format!("{module}.rs")),
                    "routes/{module}.rs is not checked here"
                );
            }
        }
    }
}
