//! Extractors that answer bad input in the API's error format instead of axum's plain-text rejections,
//! and the [`CommandContext`] every command carries (actor, correlation, idempotency key).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use hive_eventlog::CommandContext;
use hive_events::Actor;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::marker::PhantomData;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use uuid::Uuid;

use crate::error::{ApiError, Code};

/// A JSON body: an object (every body of the API is one).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = body(req, state).await?;
        match axum::Json::<Object<T>>::from_bytes(&bytes) {
            Ok(axum::Json(Object(value))) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or a type ending in `+json`).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A request's body, within the body limit, holding no NUL character in a JSON string: no read model
/// can store one (the replay refuses such an event too).
async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Code::PayloadTooLarge
            } else {
                Code::BadRequest
            };
            ApiError::new(code, e.body_text())
        })?;
    if hive_events::values::holds_nul(&bytes) {
        return Err(ApiError::new(
            Code::ValidationFailed,
            "a text holds a NUL character (\\u0000), which Hive cannot store",
        ));
    }
    Ok(bytes)
}

/// A `T` read from a JSON object only. serde's derived structs also take an array of their fields in
/// order (`[]` is a body whose fields all default), which no schema of the API allows.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(Object)
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let code = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => Code::ValidationFailed,
        _ => match rejection {
            JsonRejection::JsonDataError(_) => Code::ValidationFailed,
            _ => Code::InvalidJson,
        },
    };
    ApiError::new(code, rejection.body_text())
}

/// A JSON body that may be absent (an empty body).
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        let bytes = body(req, state).await?;
        if bytes.is_empty() && !declared {
            return Ok(OptionalJson(None));
        }
        serde_json::from_slice::<Option<Object<T>>>(&bytes)
            .map(|v| OptionalJson(v.map(|Object(v)| v)))
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::new(Code::ValidationFailed, e.to_string())
                }
                _ => ApiError::new(Code::InvalidJson, e.to_string()),
            })
    }
}

/// A path parameter.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e: PathRejection| ApiError::new(Code::BadRequest, e.body_text()))
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| ApiError::new(Code::BadRequest, e.body_text()))
    }
}

/// The context of a command: its actor is the caller the token names ([`crate::auth`]); the
/// `X-Correlation-Id`, `X-Causation-Id` and `Idempotency-Key` headers.
pub struct Command(pub CommandContext);

/// The headers a command honours, for the API's documentation (`params(Command)` on each command's
/// route).
impl utoipa::IntoParams for Command {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let header = |name: &str, schema: ObjectBuilder, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .schema(Some(schema))
                .description(Some(description))
                .build()
        };
        vec![
            header(
                "Idempotency-Key",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(200))
                    .pattern(Some("^[ -~]+$")),
                "A repeat with the same key (the same caller, route and resource) answers the first \
                 result, with `Idempotent-Replayed: true`, and appends nothing. 1 to 200 visible ASCII characters.",
            ),
            header(
                "X-Correlation-Id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                "The flow the command joins (a new one when absent): its event records it as \
                 `correlation_id`, and so does everything the flow causes.",
            ),
            header(
                "X-Causation-Id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                "What the command answers (an assignment's `causation_id`, say): its event records \
                 it as `causation_id`.",
            ),
        ]
    }
}

fn header<'a>(parts: &'a Parts, name: &str) -> Result<Option<&'a str>, ApiError> {
    parts
        .headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::new(Code::BadRequest, format!("{name} must be visible ASCII"))
            })
        })
        .transpose()
}

impl<S: Send + Sync> FromRequestParts<S> for Command {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let actor = parts
            .extensions
            .get::<crate::auth::Caller>()
            .map_or_else(|| "anonymous".to_owned(), |c| c.0.actor());
        let mut ctx = CommandContext::new(Actor::new(actor));
        if let Some(id) = header(parts, "x-correlation-id")? {
            ctx.correlation_id = Uuid::parse_str(id)
                .map_err(|_| ApiError::new(Code::BadRequest, "X-Correlation-Id must be a UUID"))?;
        }
        if let Some(id) = header(parts, "x-causation-id")? {
            ctx.causation_id =
                Some(Uuid::parse_str(id).map_err(|_| {
                    ApiError::new(Code::BadRequest, "X-Causation-Id must be a UUID")
                })?);
        }
        if let Some(key) = header(parts, "idempotency-key")? {
            // A header value may also hold tabs, which the documented pattern leaves out (found by the
            // fuzzer).
            if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| (b' '..=b'~').contains(&b))
            {
                return Err(ApiError::new(
                    Code::BadRequest,
                    "Idempotency-Key must be 1 to 200 visible ASCII characters or spaces",
                ));
            }
            ctx.idempotent(&format!("{} {}", parts.method, parts.uri.path()), key);
        }
        tracing::Span::current().record(
            "correlation_id",
            tracing::field::display(ctx.correlation_id),
        );
        Ok(Command(ctx))
    }
}
