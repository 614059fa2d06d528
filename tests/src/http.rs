//! A hive running for one test ([`TestHive`], started by [`crate::World::run`]) and the HTTP helpers
//! the tests talk to it with.

use hive::Running;
use hive_client::Method;

use crate::exposition;
use crate::process::AgentProcess;
use crate::servers::agent_program;
use crate::sse::Assignments;

/// Sends `request` and reads its answer's JSON body, whatever the status.
pub async fn json(request: hive_client::Request) -> serde_json::Value {
    request
        .send()
        .await
        .expect("a request")
        .json()
        .await
        .expect("a JSON answer")
}

/// A client of the API at `base` that sends `token` as its bearer token.
pub fn authorized_client(base: &str, token: &str) -> hive_client::Client {
    hive_client::Client::new(base).with_token(Some(token.to_owned()))
}

/// A running hive (API and/or projector) for one test.
pub struct TestHive {
    pub(crate) running: Running,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client that sends [`TestHive::token`]: its raw requests ([`hive_client::Client::request`])
    /// check the HTTP layer, its commands and reads what a user's client does.
    pub http: hive_client::Client,
    /// The admin token its client sends.
    pub token: String,
}

impl TestHive {
    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` once (a raw request), asserting nothing.
    pub async fn get(&self, path: &str) -> hive_client::Response {
        self.http
            .request(Method::GET, path)
            .send()
            .await
            .expect("GET")
    }

    /// GET `path` once the read models reflect `seq`, returning the status and JSON body.
    pub async fn get_at(&self, path: &str, seq: u64) -> (u16, serde_json::Value) {
        let response = self
            .http
            .request(Method::GET, path)
            .header("Hive-Min-Seq", seq.to_string())
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// GET `path` once the read models reflect `seq`, asserting a 200: its JSON body.
    pub async fn read_at(&self, path: &str, seq: u64) -> serde_json::Value {
        let (status, body) = self.get_at(path, seq).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `/metrics`, parsed as Prometheus text, every line of it checked ([`exposition::parse`]).
    pub async fn scrape(&self) -> prometheus_parse::Scrape {
        let text = self.get("/metrics").await.text().await.expect("/metrics");
        exposition::parse(&text)
    }

    /// POST JSON to `path`, returning the status and JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .request(Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The agent's assignment stream (server-sent events), read by the agent runtime's own client.
    pub async fn assignments(&self, agent: &str) -> Assignments {
        let stream = self
            .http
            .assignments(agent.parse().expect("an agent id"))
            .await
            .expect("open the assignment stream");
        // Read as any client reads them: JSON.
        Assignments::new(futures::StreamExt::map(stream, |a| {
            serde_json::to_value(a).expect("an assignment is JSON")
        }))
    }

    /// Runs `hive agent` as its own process against this hive, with `args` after `agent --api <url>`.
    pub fn agent_process(&self, args: &[&str]) -> AgentProcess {
        self.agent_process_logging(args, "warn", None)
    }

    /// [`TestHive::agent_process`], logging by `filter` (`HIVE_LOG`) into file `log` if given (else
    /// the test's output), so that a test can await what only the runtime knows.
    pub fn agent_process_logging(
        &self,
        args: &[&str],
        filter: &str,
        log: Option<&std::path::Path>,
    ) -> AgentProcess {
        let mut command = tokio::process::Command::new(agent_program());
        command
            .arg("agent")
            .arg("--api")
            .arg(&self.base)
            .args(args)
            .env("HIVE_LOG", filter)
            // Registers with it, then acts with the agent's own token.
            .env("HIVE_TOKEN", &self.token)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(log) = log {
            let file = std::fs::File::create(log).expect("the agent's log file");
            command
                .stdout(file.try_clone().expect("the agent's log file"))
                .stderr(file);
        }
        hive_devservers::die_with_parent(command.as_std_mut());
        AgentProcess::new(command.spawn().expect("start hive agent"))
    }

    /// Stops it.
    pub async fn stop(mut self) {
        self.running.stop_all().await.expect("stop the hive");
    }
}
