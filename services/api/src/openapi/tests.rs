//! The document as the layers' rules complete it.

use serde_json::Value;

/// The document as a server with the default public reads serves it.
fn doc() -> Value {
    let (_, openapi) = crate::routes::documented();
    super::document(openapi, &crate::ApiConfig::default().public_reads)
}

/// Every operation: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[test]
fn every_answer_has_its_schema_and_every_error_is_the_error_body() {
    let doc = doc();
    let error = serde_json::json!({"$ref": super::ERROR});
    for (method, path, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            let at = format!("{method} {path} {status}");
            if matches!(status.as_str(), "204" | "303") {
                assert!(response.get("content").is_none(), "{at} has a body");
                continue;
            }
            let content = response["content"].as_object();
            let (kind, media) = content
                .and_then(|c| c.iter().next())
                .unwrap_or_else(|| panic!("{at} documents no content"));
            assert!(media["schema"].is_object(), "{at} has no schema");
            if !status.starts_with('2') {
                assert_eq!(kind, "application/json", "{at}");
                let schema = &media["schema"];
                let errors = *schema == error
                    || schema["oneOf"]
                        .as_array()
                        .is_some_and(|s| s.contains(&error));
                assert!(errors, "{at} is not answered with ErrorBody");
            }
        }
    }
}

#[test]
fn routes_that_need_a_token_say_so_and_which_role() {
    let doc = doc();
    let public = [
        ("get", "/"),
        ("get", "/api/v1"),
        ("get", "/api/v1/"),
        ("get", "/livez"),
        ("get", "/health"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/asyncapi.json"),
        ("get", "/api/v1/docs"),
        ("get", "/api/v1/docs/"),
        ("get", "/dashboard"),
        ("post", "/api/v1/session"),
    ];
    for (method, path, operation) in operations(&doc) {
        let description = operation["description"].as_str().unwrap_or_default();
        let responses = &operation["responses"];
        if public.contains(&(method.as_str(), path.as_str())) {
            assert!(operation.get("security").is_none(), "{method} {path}");
            assert!(description.starts_with("Public"), "{method} {path}");
            assert!(responses.get("403").is_none(), "{method} {path}");
        } else {
            assert_eq!(
                operation["security"],
                serde_json::json!([{"bearerAuth": []}]),
                "{method} {path}"
            );
            assert!(description.contains("token"), "{method} {path}");
            assert!(responses.get("403").is_some(), "{method} {path}");
        }
        let unauthenticated = &responses["401"]["headers"]["WWW-Authenticate"];
        assert_eq!(unauthenticated["required"], true, "{method} {path}");
    }
    let tokens = &doc["paths"]["/api/v1/tokens"]["post"]["description"];
    assert_eq!(tokens, "Needs an admin token.");
    let report = doc["paths"]["/api/v1/tasks/{id}/{action}"]["post"]["description"]
        .as_str()
        .unwrap();
    assert!(report.contains("operator or admin") && report.contains("assigned agent"));
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&"http".into(), &"bearer".into())
    );
}

#[test]
fn reads_wait_for_a_sequence_and_say_which_they_reflect() {
    let doc = doc();
    for (method, path, operation) in operations(&doc) {
        let takes = |name: &str| {
            operation["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == name && p["in"] == "header"))
        };
        assert_eq!(takes("Hive-Min-Seq"), method == "get", "{method} {path}");
        for (status, response) in operation["responses"].as_object().unwrap() {
            let seq = &response["headers"]["Hive-Projection-Seq"];
            let at = format!("{method} {path} {status}");
            match (method.as_str(), status.as_str()) {
                ("get", "401" | "403") => assert!(seq.is_null(), "{at}"),
                ("get", "400" | "503") => assert_eq!(seq["required"], false, "{at}"),
                ("get", _) => assert_eq!(seq["required"], true, "{at}"),
                _ => assert!(seq.is_null(), "{at}"),
            }
            if status == "503" {
                assert!(response["headers"]["Retry-After"].is_object(), "{at}");
            }
        }
    }
}

#[test]
fn commands_take_their_idempotency_key_and_flow() {
    let doc = doc();
    let headers = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (method, path) in [
        ("post", "/api/v1/agents"),
        ("post", "/api/v1/tasks"),
        ("post", "/api/v1/projects"),
        ("post", "/api/v1/projects/{id}/tasks"),
        ("post", "/api/v1/tasks/{id}/{action}"),
        ("post", "/api/v1/agents/{id}/{action}"),
        ("delete", "/api/v1/agents/{id}"),
        ("post", "/api/v1/agents/spawn"),
    ] {
        let names = headers(method, path);
        assert!(
            names.contains(&"Idempotency-Key".into()) && names.contains(&"X-Correlation-Id".into()),
            "{method} {path}: {names:?}"
        );
        let replayed = &doc["paths"][path][method]["responses"];
        let ok = replayed
            .as_object()
            .unwrap()
            .iter()
            .find(|(s, _)| s.starts_with('2'));
        assert!(ok.unwrap().1["headers"]["Idempotent-Replayed"].is_object());
    }
    // Tokens are not commands on the log: no key is honoured there.
    assert!(headers("post", "/api/v1/tokens").is_empty());
}

/// The committed copy (`docs/contract/openapi.json`, from which the Python client's models are
/// generated) is the document the server serves; `HIVE_BLESS=1` rewrites it.
#[test]
fn the_committed_openapi_document_is_the_served_one() {
    let generated = doc();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/contract/openapi.json");
    if std::env::var_os("HIVE_BLESS").is_some() {
        let mut text = serde_json::to_string_pretty(&generated).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; run with HIVE_BLESS=1 to write it", path.display())
        }))
        .unwrap();
    assert!(
        on_disk == generated,
        "{} is not the document the API serves: a route changed without its published contract. \
         Run `HIVE_BLESS=1 cargo test -p hive-api openapi`, regenerate the Python client's models \
         (clients/python/scripts/generate), and check that the change is compatible (docs/api.md, \
         \"Versioning\").",
        path.display()
    );
}

/// utoipa names a body's schema after its type, and two types of one name (each route's `Create`)
/// would share one entry, the last merged: each command's documented body must be its own.
#[test]
fn each_command_documents_its_own_body() {
    let doc = doc();
    let body = |path: &str| {
        let reference = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {path} has a body"))
            .trim_start_matches("#/components/schemas/")
            .to_owned();
        doc["components"]["schemas"][&reference]["properties"].clone()
    };
    assert!(body("/api/v1/tasks").get("title").is_some());
    assert!(body("/api/v1/projects").get("name").is_some());
    assert!(body("/api/v1/projects").get("title").is_none());
    assert!(body("/api/v1/agents").get("agent_type").is_some());
}
