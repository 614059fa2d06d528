//! The OpenAPI document (`GET /api/v1/openapi.json`). The handlers' annotations say what is theirs: their
//! parameters, bodies and answers. What the layers around every handler do ([`crate::router`]) is added
//! here, once, from the same rules the layers follow, so that no route repeats it and none forgets it:
//! - who may call ([`crate::auth`]): the `bearerAuth` scheme on each route that needs a token, the role
//!   it needs in its description, 401 (with `WWW-Authenticate`) and 403;
//! - read-your-writes ([`crate::consistency`]): every read takes `Hive-Min-Seq` (400 when it cannot be
//!   met, 503 when the read models do not reach it in time) and answers `Hive-Projection-Seq`;
//! - bad input ([`crate::extract`]): 400 for a parameter that cannot be read; for a body 400, 413 and
//!   422, and 415 where the body is required (declared JSON);
//! - commands ([`crate::extract::Command`]): `Idempotent-Replayed` on a repeated answer;
//! - load shedding and backing services ([`crate::overload`], [`crate::error`]): 503 with `Retry-After`.
//!
//! utoipa's types cannot say that a response header is required, so the document is completed as JSON
//! (and two of utoipa's slips are mended there: a `u64`'s bound, a link's field names).

use serde_json::{Map, Value, json};

use crate::auth;

/// The security scheme of the routes that need a token.
const BEARER: &str = "bearerAuth";
/// Every error's schema.
const ERROR: &str = "#/components/schemas/ErrorBody";

/// The finished document of `openapi`, for a server whose public reads are `public`.
pub fn document(openapi: utoipa::openapi::OpenApi, public: &[String]) -> Value {
    let mut doc = serde_json::to_value(openapi).expect("an OpenAPI document serializes");
    doc["components"]["securitySchemes"][BEARER] = json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "hive_ and 64 hex digits",
        "description": "A token of one role: admin, operator, viewer or agent (docs/api.md). Reads also \
                        take the dashboard's cookie (`POST /api/v1/session`), and so do commands \
                        that carry its `X-Hive-Csrf` header (`GET /api/v1/session`).",
    });
    unsigned(&mut doc);
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    own_paths(paths);
    for (path, item) in paths.iter_mut() {
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            let method = match method.as_str() {
                "get" => axum::http::Method::GET,
                "post" => axum::http::Method::POST,
                "put" => axum::http::Method::PUT,
                "patch" => axum::http::Method::PATCH,
                "delete" => axum::http::Method::DELETE,
                _ => continue,
            };
            complete(operation, &method, path, public);
        }
    }
    doc
}

/// utoipa describes a `u64` as an `int64` at least 0, which would bound it at `i64::MAX`; the server
/// reads every `u64` up to `u64::MAX` (a sequence, a limit), so a larger number is not a bad one.
fn unsigned(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("format").is_some_and(|f| f == "int64")
                && object.get("minimum").is_some_and(|m| m == 0)
            {
                object.insert("format".into(), json!("uint64"));
                object.insert("maximum".into(), json!(u64::MAX));
            }
            object.values_mut().for_each(unsigned);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned),
        _ => {}
    }
}

/// The document's own routes, which utoipa's router does not serve: the document and Swagger UI.
fn own_paths(paths: &mut Map<String, Value>) {
    let get = |id: &str, summary: &str, status: &str, response: Value| {
        json!({"get": {
            "tags": ["system"],
            "operationId": id,
            "summary": summary,
            "responses": {status: response},
        }})
    };
    paths.insert(
        "/api/v1/openapi.json".into(),
        get(
            "openapi",
            "This document (OpenAPI 3.1)",
            "200",
            json!({
                "description": "The document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }),
        ),
    );
    paths.insert(
        "/api/v1/docs".into(),
        get(
            "docs_redirect",
            "Interactive documentation: redirects to `/api/v1/docs/`",
            "303",
            json!({
                "description": "See `/api/v1/docs/`",
                "headers": {"Location": {
                    "required": true,
                    "schema": {"type": "string", "const": "/api/v1/docs/"},
                }},
            }),
        ),
    );
    paths.insert(
        "/api/v1/docs/".into(),
        get(
            "docs",
            "Interactive documentation (Swagger UI)",
            "200",
            json!({
                "description": "The page",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }),
        ),
    );
}

/// Adds to `operation` (`method` `path`) what the layers around its handler do.
fn complete(operation: &mut Value, method: &axum::http::Method, path: &str, public: &[String]) {
    let read = *method == axum::http::Method::GET;
    match auth::requirement(method, path, public) {
        Some(who) => {
            operation["security"] = json!([{BEARER: []}]);
            describe(operation, &who);
            error(
                operation,
                401,
                "unauthenticated: no token, or one unknown or revoked",
            );
            error(operation, 403, "forbidden: the token's role may not");
        }
        None => {
            describe(operation, "Public: no token needed.");
            error(
                operation,
                401,
                "unauthenticated: an `Authorization` header that is not `Bearer <token>`",
            );
        }
    }
    if read {
        let parameters = operation["parameters"].as_array_mut();
        let min_seq = json!({
            "name": "Hive-Min-Seq",
            "in": "header",
            "required": false,
            "description": "Wait until the read models reflect this event (a sequence, or `head`: the \
                            log's last event now), at most 2 s by default, then 503 \
                            `projection_lagging`. A sequence beyond the log's end is 400.",
            "schema": {"type": "string", "pattern": "^([0-9]+|head)$"},
        });
        match parameters {
            Some(parameters) => parameters.push(min_seq),
            None => operation["parameters"] = json!([min_seq]),
        }
    }
    let has_parameters = operation["parameters"]
        .as_array()
        .is_some_and(|p| !p.is_empty());
    let body = operation.get("requestBody").cloned();
    if has_parameters || body.is_some() {
        error(
            operation,
            400,
            "bad_request or invalid_json: a parameter, header or body that cannot be read",
        );
    }
    if let Some(body) = body {
        error(
            operation,
            413,
            "payload_too_large: a body over the limit (1 MiB by default)",
        );
        error(
            operation,
            422,
            "validation_failed: a field missing or not acceptable",
        );
        if body["required"] == true {
            error(
                operation,
                415,
                "unsupported_media_type: a body not declared `application/json`",
            );
        }
    }
    let busy = if read {
        "unavailable, overloaded, or projection_lagging (`Hive-Min-Seq` not reached in time)"
    } else {
        "unavailable or overloaded"
    };
    error(operation, 503, &format!("{busy}: try again"));
    response_headers(operation, read);
}

/// Prepends who may call to the operation's description.
fn describe(operation: &mut Value, who: &str) {
    operation["description"] = match operation["description"].as_str() {
        Some(more) => json!(format!("{who}\n\n{more}")),
        None => json!(who),
    };
}

/// Declares that the operation may answer `status` with an error. When its handler answers that
/// status with a body of its own, either may come.
fn error(operation: &mut Value, status: u16, description: &str) {
    let responses = operation["responses"]
        .as_object_mut()
        .expect("an operation has responses");
    let error = json!({"$ref": ERROR});
    match responses.get_mut(&status.to_string()) {
        None => {
            responses.insert(
                status.to_string(),
                json!({
                    "description": description,
                    "content": {"application/json": {"schema": error}},
                }),
            );
        }
        Some(response) => {
            let schema = &mut response["content"]["application/json"]["schema"];
            if schema.is_null() {
                *schema = error;
            } else if *schema != error {
                *schema = json!({"oneOf": [schema.take(), error]});
                let mine = response["description"].as_str().unwrap_or_default();
                response["description"] = json!(format!("{mine}; or an error: {description}"));
            }
        }
    }
}

/// The headers of each answer: those its handler's annotation names (always sent), and the layers'.
fn response_headers(operation: &mut Value, read: bool) {
    let replays = operation["parameters"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["name"] == "Idempotency-Key"));
    let responses = operation["responses"]
        .as_object_mut()
        .expect("an operation has responses");
    for (status, response) in responses.iter_mut() {
        if response["description"] == "" {
            response["description"] = json!("OK");
        }
        // utoipa 5 names a link's fields in snake case; OpenAPI's are camel case.
        let links = response.get_mut("links").and_then(Value::as_object_mut);
        for link in links.into_iter().flat_map(|l| l.values_mut()) {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.as_object_mut().and_then(|l| l.remove(from)) {
                    link[to] = value;
                }
            }
        }
        let only_errors = response["content"]["application/json"]["schema"]["$ref"] == ERROR;
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}));
        for header in headers
            .as_object_mut()
            .into_iter()
            .flat_map(|h| h.values_mut())
        {
            header["required"] = json!(true);
        }
        let mut add = |name: &str, required: bool, schema: Value, description: &str| {
            headers[name] =
                json!({"required": required, "schema": schema, "description": description});
        };
        match status.as_str() {
            "401" => add(
                "WWW-Authenticate",
                true,
                json!({"type": "string"}),
                "`Bearer realm=\"hive\"`",
            ),
            "503" => add(
                "Retry-After",
                only_errors,
                json!({"type": "integer", "minimum": 0}),
                "Seconds to wait before trying again (on every error 503)",
            ),
            _ => {}
        }
        // The read-your-writes layer runs inside authorization, and answers its own refusals
        // without the header.
        if read && !matches!(status.as_str(), "401" | "403") {
            add(
                "Hive-Projection-Seq",
                !matches!(status.as_str(), "400" | "503"),
                json!({"type": "integer", "minimum": 0}),
                "The checkpoint the answer reflects at least (absent on a refused `Hive-Min-Seq`, \
                 an overload or an unreadable token)",
            );
        }
        if replays && status.starts_with('2') {
            add(
                "Idempotent-Replayed",
                false,
                json!({"type": "string", "enum": ["true"]}),
                "`true` when this repeats the answer to an earlier request with the same \
                 `Idempotency-Key`",
            );
        }
        if headers.as_object().is_some_and(Map::is_empty) {
            response
                .as_object_mut()
                .expect("a response is an object")
                .remove("headers");
        }
    }
}

#[cfg(test)]
mod tests;
