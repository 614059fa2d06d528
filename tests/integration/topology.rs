//! The production topology of `compose/`: its files validated (Docker cannot run here), and the same
//! topology run without Docker: a 3-node JetStream cluster with the stream on 3 replicas, and the hive's
//! parts as separate processes of the real binary, two of each (the APIs side by side, as compose runs
//! them behind its nginx load balancer, whose configuration is checked against the compose file).
//!
//! Long because each test walks the whole compose topology in order: a split would hide it. Its
//! monitoring (Prometheus' configuration, the alert rules and their tests, the dashboard's queries) is
//! checked with promtool in `monitoring`.

mod monitoring;

use hive_client::Method;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_devservers::free_port;
use hive_eventlog::users::Service;
use hive_tests::api::a_spawned_agent_runs_a_task;
use hive_tests::cluster::{cluster_configured, cluster_env, refusals, syncs_every_write};
use hive_tests::process::{admin_token, migrate, part};
use hive_tests::{World, until};
use serde_json::{Value, json};

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

/// A YAML file as JSON, with `<<` merge keys applied as Compose applies them.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: serde_norway::Value = serde_norway::from_str(&text).expect("valid YAML");
    value.apply_merge().expect("merge keys");
    serde_json::to_value(value).expect("YAML as JSON")
}

/// The metric names a PromQL expression reads (histogram series named by their family): Hive's
/// (`hive_*`, `process_*`), the NATS and PostgreSQL exporters' and Prometheus' `ALERTS`.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if ["hive_", "process_", "jetstream_", "gnatsd_", "pg_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
                || word == "ALERTS"
            {
                let family = word
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                names.insert(family.to_owned());
            }
            word.clear();
        }
    }
    names
}

/// The load balancer: the official nginx image with `compose/nginx.conf`, the one published port,
/// sending every request to the API replicas at the port they listen on, server-sent events unbuffered.
fn assert_load_balanced(dir: &Path, services: &serde_json::Map<String, Value>) {
    let lb = &services["hive-lb"];
    assert!(lb["image"].as_str().unwrap().starts_with("nginx:"), "{lb}");
    assert_eq!(
        lb["volumes"],
        json!(["./nginx.conf:/etc/nginx/nginx.conf:ro"])
    );
    assert_eq!(lb["ports"], json!(["8080:8080"]));
    assert!(
        services["hive-api"]["ports"].is_null(),
        "the replicas publish no port of their own"
    );
    let api_port = services["hive-api"]["environment"]["HIVE_HTTP_ADDR"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1;
    let conf = std::fs::read_to_string(dir.join("nginx.conf")).unwrap();
    // Its directives, comments left out.
    let directives: Vec<String> = conf
        .lines()
        .map(|line| line.split('#').next().unwrap().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    let has = |wanted: &str| directives.iter().any(|d| d == wanted);
    assert_eq!(
        conf.matches('{').count(),
        conf.matches('}').count(),
        "balanced blocks"
    );
    assert!(has("upstream hive_api {"), "{directives:#?}");
    assert!(has(&format!("server hive-api:{api_port} resolve;")));
    assert!(has("listen 8080;"));
    assert!(has("proxy_pass http://hive_api;"));
    assert!(
        has("proxy_buffering off;"),
        "server-sent events pass unbuffered"
    );
    assert!(has("resolver 127.0.0.11 valid=5s ipv6=off;"));
    for directive in &directives {
        let ends = directive.ends_with(';') || directive.ends_with('{') || directive == "}";
        assert!(ends, "an unterminated directive: {directive}");
    }
}

#[tokio::test]
async fn the_compose_files_are_valid_and_the_dashboard_reads_real_metrics() {
    let dir = compose_dir();
    let compose = yaml(&dir.join("docker-compose.yml"));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("schema/compose-spec.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft201909)
        .build(&schema)
        .expect("the compose schema");
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "docker-compose.yml: {errors:#?}");

    let services = compose["services"].as_object().unwrap();
    for name in [
        "nats-1",
        "nats-2",
        "nats-3",
        "postgres",
        "migrate",
        "hive-api",
        "hive-lb",
        "hive-projector",
        "hive-scheduler",
        "prometheus",
        "grafana",
        "nats-exporter-1",
        "nats-exporter-2",
        "nats-exporter-3",
        "postgres-monitor",
        "postgres-exporter",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    for part in ["migrate", "hive-api", "hive-projector", "hive-scheduler"] {
        let env = &services[part]["environment"];
        assert_eq!(env["HIVE_STREAM_REPLICAS"], "3", "{part}");
        assert_eq!(
            env["HIVE_NATS_URL"].as_str().unwrap().split(',').count(),
            3,
            "{part} knows every NATS node"
        );
    }
    let routes = services["nats-1"]["command"].to_string();
    assert!(routes.contains("nats-2:6222") && routes.contains("nats-3:6222"));
    // Least privilege: every NATS node has Hive's users (the file is what `hive nats-users` writes),
    // and each part connects as its own.
    assert_eq!(
        std::fs::read_to_string(dir.join("nats.conf")).unwrap(),
        hive::cli::nats_users(&hive_eventlog::Namespace::new("hive")),
        "compose/nats.conf is `hive nats-users`' output"
    );
    // Every node fsyncs every write before its ack, and includes the users.
    let node_conf = std::fs::read_to_string(dir.join("nats-node.conf")).unwrap();
    assert!(node_conf.contains("sync_interval: always"), "{node_conf}");
    assert!(node_conf.contains("include ./hive.conf"), "{node_conf}");
    for node in ["nats-1", "nats-2", "nats-3"] {
        assert!(
            services[node]["command"]
                .to_string()
                .contains("/etc/nats/node.conf")
        );
        let mounts = services[node]["volumes"].to_string();
        assert!(
            mounts.contains("./nats-node.conf:/etc/nats/node.conf")
                && mounts.contains("./nats.conf:/etc/nats/hive.conf"),
            "{mounts}"
        );
    }
    for (part, user) in [
        ("migrate", "hive-admin"),
        ("hive-api", "hive-api"),
        ("hive-projector", "hive-projector"),
        ("hive-scheduler", "hive-scheduler"),
    ] {
        let url = services[part]["environment"]["HIVE_NATS_URL"]
            .as_str()
            .unwrap();
        assert!(
            url.split(',')
                .all(|u| u.starts_with(&format!("nats://{user}:"))),
            "{part} connects as {user}"
        );
    }
    let api = &services["hive-api"]["environment"];
    assert!(
        api["HIVE_API_DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgres://hive_api:"),
        "the API reads as hive_api"
    );
    assert!(
        api["HIVE_DATABASE_URL"].is_null(),
        "the API is not given the owner's URL"
    );

    // Scaled out: two of each part (the APIs behind the load balancer, one projector and one
    // scheduler active at a time).
    for part in ["hive-api", "hive-projector", "hive-scheduler"] {
        assert_eq!(services[part]["deploy"]["replicas"], 2, "{part}");
    }
    assert_load_balanced(&dir, services);

    let prometheus = yaml(&dir.join("prometheus.yml"));
    let jobs: Vec<&str> = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    assert_eq!(
        jobs,
        [
            "hive-api",
            "hive-projector",
            "hive-scheduler",
            "nats",
            "postgres"
        ]
    );
    assert_eq!(prometheus["rule_files"], json!(["alerts.yml"]));
    let mounts = services["prometheus"]["volumes"].to_string();
    assert!(
        mounts.contains("./alerts.yml:/etc/prometheus/alerts.yml"),
        "{mounts}"
    );
    // Each target is a compose service, at the port it serves /metrics on: the API on its own address,
    // the others on HIVE_METRICS_ADDR, the NATS exporters on `-port`, PostgreSQL's on
    // `--web.listen-address`.
    let metrics_port = |service: &str| -> String {
        let service_def = services
            .get(service)
            .unwrap_or_else(|| panic!("prometheus.yml scrapes {service:?}, no compose service"));
        let env = &service_def["environment"];
        let args: Vec<&str> = service_def["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let flag = args
            .iter()
            .position(|arg| *arg == "-port")
            .map(|at| format!(":{}", args[at + 1]))
            .or_else(|| {
                args.iter()
                    .find_map(|arg| arg.strip_prefix("--web.listen-address="))
                    .map(str::to_owned)
            });
        let addr = env["HIVE_HTTP_ADDR"]
            .as_str()
            .or(env["HIVE_METRICS_ADDR"].as_str())
            .map(str::to_owned)
            .or(flag)
            .unwrap_or_else(|| panic!("{service} serves no /metrics"));
        addr.rsplit_once(':').unwrap().1.to_owned()
    };
    let mut scraped = Vec::new();
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        assert!(
            job["metrics_path"].is_null() || job["metrics_path"] == "/metrics",
            "{job}"
        );
        for target in job["static_configs"].as_array().into_iter().flatten() {
            for target in target["targets"].as_array().unwrap() {
                let (host, port) = target.as_str().unwrap().rsplit_once(':').unwrap();
                assert_eq!(port, metrics_port(host), "{target}");
                scraped.push(host.to_owned());
            }
        }
        for found in job["dns_sd_configs"].as_array().into_iter().flatten() {
            for host in found["names"].as_array().unwrap() {
                let host = host.as_str().unwrap();
                assert_eq!(found["port"].to_string(), metrics_port(host), "{found}");
                scraped.push(host.to_owned());
            }
        }
    }
    assert_eq!(
        scraped,
        [
            "hive-api",
            "hive-projector",
            "hive-scheduler",
            "nats-exporter-1",
            "nats-exporter-2",
            "nats-exporter-3",
            "postgres-exporter"
        ]
    );
    // Each NATS exporter watches its own node, with the JetStream metrics on.
    for n in 1..=3 {
        let command = services[format!("nats-exporter-{n}").as_str()]["command"].to_string();
        assert!(
            command.contains(&format!("\"http://nats-{n}:8222\"")) && command.contains("\"-jsz\""),
            "{command}"
        );
    }
    // The PostgreSQL exporter reads as hive_exporter (statistics only), its password from compose/.env.
    let exporter = &services["postgres-exporter"]["environment"];
    assert_eq!(exporter["DATA_SOURCE_USER"], "hive_exporter");
    assert!(
        exporter["DATA_SOURCE_PASS"]
            .as_str()
            .unwrap()
            .starts_with("${HIVE_PG_EXPORTER_PASSWORD:?")
    );
    // Every password compose asks compose/.env for is one README's recipe makes.
    let compose_text = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    let readme = std::fs::read_to_string(dir.join("../README.md")).unwrap();
    let made = readme
        .find("> compose/.env")
        .expect("README makes compose/.env");
    let recipe = &readme[readme[..made].rfind("for v in").unwrap()..made];
    for variable in compose_text.split("${").skip(1) {
        let variable = variable.split([':', '}']).next().unwrap();
        assert!(
            recipe.contains(variable),
            "README's compose/.env lacks {variable}"
        );
    }
    let datasource = yaml(&dir.join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        datasource["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    let provider = yaml(&dir.join("grafana/provisioning/dashboards/hive.yml"));
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/dashboards/hive.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    // Hive's metrics the dashboard plots and the alert rules read (the exporters' are checked in
    // `monitoring`).
    let mut wanted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            wanted.extend(metrics_in(target["expr"].as_str().unwrap()));
        }
    }
    for rule in monitoring::alert_rules() {
        wanted.extend(metrics_in(rule["expr"].as_str().unwrap()));
    }
    wanted.retain(|name| name.starts_with("hive_") || name.starts_with("process_"));
    assert!(wanted.len() >= 12, "{wanted:?}");
    let by_status = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .filter_map(|target| target["expr"].as_str())
        .any(|expr| {
            expr.contains("hive_http_requests_total") && expr.contains("by (route, status)")
        });
    assert!(by_status, "an HTTP panel breaks requests down by status");

    // Every metric of Hive's the dashboard plots or an alert reads is one a running hive exports.
    let world = World::new().await;
    let hive = world.full_hive().await;
    let (_, agent) = hive
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    let agent = agent["agent_id"].as_str().unwrap().to_owned();
    hive.post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    let (_, task) = hive
        .post("/api/v1/tasks", json!({"title": "plotted"}))
        .await;
    world
        .wait_for_event(
            hive_events::AggregateKind::Task,
            task["task_id"].as_str().unwrap().parse().unwrap(),
            "TaskAssigned",
        )
        .await;
    let poison = world
        .publish_raw(
            &format!(
                "{}.task.{}",
                world.log().subjects().all().trim_end_matches(".>"),
                uuid::Uuid::now_v7()
            ),
            "poison",
        )
        .await;
    // Once the poison is projected, every kind of metric has been recorded at least once.
    let (status, _) = hive.get_at("/api/v1/dead-letters", poison).await;
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = hive
        .scrape()
        .await
        .samples
        .into_iter()
        .map(|s| s.metric)
        .collect();
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(missing.is_empty(), "read but not exported: {missing:?}");
    hive.stop().await;
}

#[tokio::test]
async fn the_compose_topology_runs_without_docker() {
    // Three nats-server processes in one JetStream cluster, with compose's users (its passwords from
    // the environment are given here instead), in compose's namespace.
    let dir = tempfile::tempdir().unwrap();
    let mut users = std::fs::read_to_string(compose_dir().join("nats.conf")).unwrap();
    for service in Service::ALL {
        users = users.replace(
            &format!("${}", service.password_variable()),
            &format!("\"{}-secret\"", service.name()),
        );
    }
    let nodes = cluster_configured(dir.path(), &users).await;
    for node in &nodes {
        assert!(syncs_every_write(&node.monitoring_url()).await);
    }
    let url_as = |service: Service| {
        nodes
            .iter()
            .map(|node| {
                hive::with_credentials(
                    &node.url(),
                    &service.user(),
                    &format!("{}-secret", service.name()),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
            .join(",")
    };

    let world = World::new().await;
    let reader = hive::with_credentials(&world.database_url, "hive_api_compose", "secret").unwrap();
    let as_service = |service: Service| {
        let mut env = cluster_env(&world, &url_as(service), dir.path());
        for (key, value) in &mut env {
            if *key == "HIVE_NAMESPACE" {
                *value = "hive".into();
            }
        }
        env.push(("HIVE_API_DATABASE_URL", reader.clone()));
        env
    };
    migrate(&as_service(Service::Admin)).await;
    // The API is given its read-only role's URL, not the owner's.
    let env: Vec<(&'static str, String)> = as_service(Service::Api)
        .into_iter()
        .filter(|(key, _)| *key != "HIVE_DATABASE_URL")
        .collect();

    // Two API replicas, as compose runs them behind its load balancer, and two projectors.
    let api_ports = [free_port().unwrap(), free_port().unwrap()];
    let projector_metrics = [free_port().unwrap(), free_port().unwrap()];
    let with = |extra: &[(&'static str, String)]| {
        let mut all = env.clone();
        all.extend_from_slice(extra);
        all
    };
    let logs = dir.path();
    let _apis: Vec<_> = api_ports
        .iter()
        .enumerate()
        .map(|(n, port)| {
            part(
                &["serve", "api"],
                &with(&[("HIVE_HTTP_ADDR", format!("127.0.0.1:{port}"))]),
                &logs.join(format!("api-{}.log", n + 1)),
            )
        })
        .collect();
    let _projectors: Vec<_> = projector_metrics
        .iter()
        .enumerate()
        .map(|(n, port)| {
            let mut env = as_service(Service::Projector);
            env.push(("HIVE_METRICS_ADDR", format!("127.0.0.1:{port}")));
            part(
                &["serve", "projector"],
                &env,
                &logs.join(format!("projector-{}.log", n + 1)),
            )
        })
        .collect();
    // Each scheduler serves its metrics, as compose has them do.
    let scheduler_metrics = [free_port().unwrap(), free_port().unwrap()];
    let _schedulers: Vec<_> = scheduler_metrics
        .iter()
        .enumerate()
        .map(|(n, port)| {
            let mut env = as_service(Service::Scheduler);
            env.push(("HIVE_METRICS_ADDR", format!("127.0.0.1:{port}")));
            part(
                &["serve", "scheduler"],
                &env,
                &logs.join(format!("scheduler-{}.log", n + 1)),
            )
        })
        .collect();
    let show_logs = || {
        for name in [
            "api-1",
            "api-2",
            "projector-1",
            "projector-2",
            "scheduler-1",
            "scheduler-2",
        ] {
            let text =
                std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
            eprintln!("--- {name}\n{text}");
        }
    };

    let token = admin_token(&as_service(Service::Admin)).await;
    let bases = api_ports.map(|port| format!("http://127.0.0.1:{port}"));
    let base = &bases[0];
    let http = hive_tests::authorized_client(base, &token);
    for base in &bases {
        let health: Value = until(
            Duration::from_secs(60),
            "a healthy API",
            show_logs,
            async || {
                let r = http
                    .request(Method::GET, &format!("{base}/health"))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())?;
                r.json().await.ok()
            },
        )
        .await;
        assert_eq!(health["status"], "healthy", "{health}");
    }

    // The stream is replicated on all three nodes.
    let admin = async_nats::ConnectOptions::with_user_and_password(
        Service::Admin.user(),
        "admin-secret".into(),
    )
    .connect(nodes[2].url())
    .await
    .unwrap();
    let js = async_nats::jetstream::new(admin);
    let mut stream = js
        .get_stream(hive_eventlog::Namespace::new("hive").stream())
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);

    // An agent spawned by the API process runs a task the scheduler assigns, through the cluster.
    a_spawned_agent_runs_a_task(&http, "/api/v1/agents/spawn", show_logs).await;

    let metrics_of = async |port: u16| -> String {
        http.request(Method::GET, &format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // A write through one API replica is read through the other at once.
    let (created, seq) = {
        let body = http
            .create_task(&json!({"title": "through api-1"}))
            .await
            .unwrap();
        (
            body["task_id"].as_str().unwrap().to_owned(),
            body["seq"].as_u64().unwrap(),
        )
    };
    let other = hive_tests::authorized_client(&bases[1], &token);
    let read = other
        .request(Method::GET, &format!("/api/v1/tasks/{created}"))
        .header("Hive-Min-Seq", seq.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // Each projector process serves its own metrics; one of them folds.
    let mut leading = 0.0;
    for port in projector_metrics {
        let scrape = hive_tests::exposition::parse(&metrics_of(port).await);
        leading += scrape
            .samples
            .iter()
            .find(|s| s.metric == "hive_projector_leading")
            .map_or(0.0, |s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => 0.0,
            });
    }
    assert_eq!(leading, 1.0, "one projector leads");
    // So does each scheduler; the active one (whichever holds the lease) measured its queue and the
    // assignment it made.
    let mut measured = Vec::new();
    for port in scheduler_metrics {
        let scrape = hive_tests::exposition::parse(&metrics_of(port).await);
        let depth = scrape
            .samples
            .iter()
            .any(|s| s.metric == "hive_scheduler_queue_depth");
        let assignments = scrape.samples.iter().find_map(|s| {
            match (&s.metric[..], &s.value) {
                (
                    "hive_scheduler_assignment_latency_seconds",
                    prometheus_parse::Value::Histogram(h),
                ) => {
                    // The +Inf bucket holds them all.
                    h.iter().map(|bucket| bucket.count).reduce(f64::max)
                }
                _ => None,
            }
        });
        measured.push((depth, assignments));
    }
    assert!(
        measured
            .iter()
            .any(|(depth, assigned)| *depth && assigned.is_some_and(|n| n >= 1.0)),
        "no scheduler exported its queue depth and an assignment's latency: {measured:?}"
    );
    // What the alerts on leadership read (the projectors' is checked above): exactly one of the two
    // schedulers leads, the other exports 0 (so the rule's sum is 1).
    let leader = |text: &str, metric: &str| -> Vec<f64> {
        hive_tests::exposition::parse(text)
            .samples
            .into_iter()
            .filter(|s| s.metric == metric)
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
            .collect()
    };
    let mut leading = Vec::new();
    for port in scheduler_metrics {
        leading.extend(leader(&metrics_of(port).await, "hive_scheduler_leading"));
    }
    leading.sort_by(f64::total_cmp);
    assert_eq!(
        leading,
        [0.0, 1.0],
        "hive_scheduler_leading of the two schedulers"
    );
    // What the alerts on stream replicas read: the NATS exporter (`-jsz all`) asks each node's
    // monitoring port for this, and each node reports its own copy of the event stream; once the
    // writes are replicated, all three are at the same sequence.
    let copies: Vec<u64> = until(
        Duration::from_secs(20),
        "three copies of the event stream at one sequence",
        show_logs,
        async || {
            let mut copies = Vec::new();
            for node in &nodes {
                let url = format!(
                    "{}/jsz?consumers=true&config=true&raft=true",
                    node.monitoring_url()
                );
                let jsz: Value = http
                    .request(Method::GET, &url)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let last_seq = jsz["account_details"]
                    .as_array()?
                    .iter()
                    .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
                    .find(|stream| stream["name"] == "HIVE_EVENTS")?["state"]["last_seq"]
                    .as_u64()?;
                copies.push(last_seq);
            }
            (copies.iter().all(|seq| *seq == copies[0])).then_some(copies)
        },
    )
    .await;
    assert!(copies[0] > 0, "{copies:?}");
    drop(stream);
    // Each part did all of that as its own user, and no node refused any of them anything.
    for n in 0..3 {
        let refused = refusals(&dir.path().join(format!("n{n}")));
        assert!(refused.is_empty(), "node {n}: {}", refused.join("\n"));
    }
}
