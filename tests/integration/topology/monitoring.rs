//! Compose's monitoring, checked by Prometheus' own tool: `promtool` (pinned, installed by
//! `scripts/install-deps --test-tools`) finds `prometheus.yml` and the alert rules valid, runs the rules'
//! unit tests (`compose/alerts.test.yml`: each alert fires where it should, stays quiet where it should
//! not, and says what it should), and parses every query of the Grafana dashboard. Hive's own metrics
//! in those queries are checked against a running hive by the parent module's
//! `the_compose_files_are_valid_and_the_dashboard_reads_real_metrics`; the exporters' cannot be (no
//! exporter runs here): their names are checked against the list below.
//! The SQL that makes the PostgreSQL exporter's role runs on the test's PostgreSQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use hive_tests::World;
use serde_json::{Value, json};

use super::{compose_dir, metrics_in, yaml};

/// The exporters' metrics the dashboard and the rules read, as the pinned exporters name them
/// (natsio/prometheus-nats-exporter 0.20.1 `collector/jsz.go`; prometheuscommunity/postgres-exporter
/// v0.20.1 `collector/pg_stat_database.go` and its pg_settings collector), and Prometheus' own ALERTS.
const OUTSIDE_METRICS: [&str; 7] = [
    "ALERTS",
    "jetstream_stream_last_seq",
    "jetstream_stream_total_messages",
    "pg_settings_max_connections",
    "pg_stat_database_numbackends",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
];

/// promtool: `HIVE_PROMTOOL`, or where `scripts/install-deps --test-tools` puts it.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("HIVE_PROMTOOL") {
        return path.into();
    }
    hive_tests::test_tools().join("promtool/promtool")
}

/// Runs promtool in `dir`; panics with its output unless it succeeds.
fn promtool_ok(dir: &Path, args: &[&str]) -> String {
    let tool = promtool();
    assert!(
        tool.exists(),
        "{} is missing: run scripts/install-deps --test-tools",
        tool.display()
    );
    let output = Command::new(&tool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// Every alert rule of `compose/alerts.yml`.
pub(super) fn alert_rules() -> Vec<Value> {
    let rules = yaml(&compose_dir().join("alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Every query of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(compose_dir().join("grafana/dashboards/hive.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .map(|target| target["expr"].as_str().expect("a PromQL query").to_owned())
        .collect()
}

#[test]
fn prometheus_accepts_the_configuration_and_the_alert_rules_pass_their_tests() {
    let dir = compose_dir();
    let checked = promtool_ok(&dir, &["check", "config", "prometheus.yml"]);
    assert!(checked.contains("1 rule files found"), "{checked}");
    promtool_ok(&dir, &["check", "rules", "alerts.yml"]);
    let tested = promtool_ok(&dir, &["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Each alert waits before firing, says how bad it is and what to do, and has its tests (firing
    // and quiet) and its entry in the operators' guide.
    // (alertname, fires) of every case of the unit tests.
    let cases: Vec<(String, bool)> = yaml(&dir.join("alerts.test.yml"))["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_array().unwrap().clone())
        .map(|case| {
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            (case["alertname"].as_str().unwrap().to_owned(), fires)
        })
        .collect();
    let guide = std::fs::read_to_string(dir.join("../docs/operations.md")).unwrap();
    let rules = alert_rules();
    assert!(rules.len() >= 9, "{rules:#?}");
    for rule in &rules {
        let name = rule["alert"].as_str().expect("only alerting rules");
        assert!(rule["for"].is_string(), "{name} has no `for`");
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}'s severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| text.len() > 20),
                "{name} has no {annotation}"
            );
        }
        let firing = cases.iter().filter(|(n, f)| n == name && *f).count();
        let quiet = cases.iter().filter(|(n, f)| n == name && !*f).count();
        assert!(
            firing >= 1 && quiet >= 1,
            "{name}: {firing} firing and {quiet} quiet cases in alerts.test.yml"
        );
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/operations.md does not explain {name}"
        );
    }
}

#[test]
fn every_query_of_the_dashboard_and_the_rules_parses_and_reads_known_metrics() {
    // promtool parses the dashboard's queries as the expressions of recording rules.
    let queries = dashboard_queries();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(n, expr)| json!({"record": format!("dashboard:query_{n}"), "expr": expr}))
        .collect();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.yml"),
        serde_json::to_string(&file).unwrap(),
    )
    .unwrap();
    let checked = promtool_ok(dir.path(), &["check", "rules", "dashboard.yml"]);
    assert!(
        checked.contains(&format!("{} rules found", queries.len())),
        "{checked}"
    );

    // The metrics outside Hive are named as their exporters name them.
    let mut read = BTreeSet::new();
    for expr in queries.iter().map(String::as_str).chain(
        alert_rules()
            .iter()
            .map(|rule| rule["expr"].as_str().unwrap()),
    ) {
        read.extend(metrics_in(expr));
    }
    let outside: BTreeSet<&str> = read
        .iter()
        .map(String::as_str)
        .filter(|name| !name.starts_with("hive_") && !name.starts_with("process_"))
        .collect();
    let known = BTreeSet::from(OUTSIDE_METRICS);
    let unknown: Vec<_> = outside.difference(&known).collect();
    assert!(unknown.is_empty(), "not any exporter's: {unknown:?}");
    // The dashboard shows the alerts, NATS' streams and PostgreSQL.
    for prefix in ["ALERTS", "jetstream_", "pg_"] {
        assert!(
            outside.iter().any(|name| name.starts_with(prefix)),
            "the dashboard reads no {prefix}* series"
        );
    }
}

/// compose's postgres-monitor makes hive_exporter, the PostgreSQL exporter's role, and is safe to run
/// again; the role reads the server's statistics and none of Hive's tables.
#[tokio::test]
async fn the_postgres_exporter_role_reads_statistics_only() {
    let world = World::new().await; // its database migrated: Hive's tables
    let dir = compose_dir();
    let psql = hive_devservers::postgres_bin_dir().unwrap().join("psql");
    let run_psql = |url: &str, args: &[&str]| {
        std::process::Command::new(&psql)
            .arg(url)
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-t"])
            .args(args)
            .output()
            .expect("run psql")
    };
    let role_sql = dir.join("exporter-role.sql");
    for _ in 0..2 {
        let made = run_psql(
            &world.database_url,
            &[
                "-v",
                "password=exporter-secret",
                "-f",
                role_sql.to_str().unwrap(),
            ],
        );
        assert!(
            made.status.success(),
            "exporter-role.sql: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let exporter =
        hive::with_credentials(&world.database_url, "hive_exporter", "exporter-secret").unwrap();
    let stats = run_psql(
        &exporter,
        &["-c", "SELECT sum(numbackends) FROM pg_stat_database"],
    );
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let hive_rows = run_psql(&exporter, &["-c", "SELECT count(*) FROM agents"]);
    assert!(
        String::from_utf8_lossy(&hive_rows.stderr).contains("permission denied"),
        "hive_exporter reads Hive's tables: {hive_rows:?}"
    );
}
