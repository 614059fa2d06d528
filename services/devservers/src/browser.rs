//! Headless Chromium (Debian's `chromium`) driven through `chromedriver` (WebDriver), for the
//! dashboard's browser tests and its on-screen benchmark. The page records, itself, when an element
//! first appears (a `MutationObserver`), so what is timed is the page's own clock, not WebDriver's
//! round trips.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::DevServerError;

/// A chromedriver process and a headless Chromium session on it; both end when this is dropped.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: tokio::process::Child,
}

/// What went wrong driving the browser.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver could not be started.
    #[error("chromedriver (Debian's chromium-driver; scripts/install-deps installs it): {0}")]
    Driver(#[from] DevServerError),
    /// The session could not be opened.
    #[error("a Chromium session: {0}")]
    Session(#[from] fantoccini::error::NewSessionError),
    /// A command to the page failed.
    #[error("the page: {0}")]
    Command(#[from] fantoccini::error::CmdError),
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn start() -> Result<Self, BrowserError> {
        let port = crate::free_port()?;
        let mut command = tokio::process::Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        crate::die_with_parent(command.as_std_mut());
        let driver = command.spawn().map_err(crate::io("start chromedriver"))?;
        // chromedriver is ready once it accepts connections.
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        ready.await.map_err(|_| {
            DevServerError::NotReady("chromedriver", Duration::from_secs(20), "stderr".into())
        })?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
            }),
        );
        // Plain HTTP on loopback: no TLS for chromedriver.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        Ok(Self {
            client,
            _driver: driver,
        })
    }

    /// Starts recording, in the page, when an element matching `selector` first appears (epoch ms).
    pub async fn watch(&self, selector: &str) -> Result<(), BrowserError> {
        self.client
            .execute(
                r#"
                const sel = arguments[0];
                window.__seen = window.__seen || {};
                const check = () => {
                    if (!window.__seen[sel] && document.querySelector(sel)) {
                        window.__seen[sel] = performance.timeOrigin + performance.now();
                    }
                };
                new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true });
                check();
                "#,
                vec![json!(selector)],
            )
            .await?;
        Ok(())
    }

    /// When (epoch ms) the watched `selector` appeared; waits up to 5 s for it (`None`: it did not).
    pub async fn seen(&self, selector: &str) -> Result<Option<f64>, BrowserError> {
        let at = self
            .client
            .execute_async(
                r#"
                const [sel, done] = arguments;
                const began = Date.now();
                (function poll() {
                    if (window.__seen[sel]) return done(window.__seen[sel]);
                    if (Date.now() - began > 5000) return done(null);
                    setTimeout(poll, 5);
                })();
                "#,
                vec![json!(selector)],
            )
            .await?;
        Ok(at.as_f64())
    }

    /// Runs `script` in the page and answers what it returns.
    pub async fn run(&self, script: &str) -> Result<Value, BrowserError> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Ends the session (chromedriver ends when this is dropped).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}
