//! The HTTP load generator: `wrk` (Debian's package), a separate process, so the load does not share
//! the server's runtime. Its `--latency` report gives the rate and the percentiles.

use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    /// Requests per second.
    pub rate: f64,
    /// p50, p99 and max latency.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
    /// Requests answered outside 2xx/3xx, or failed at the socket.
    pub errors: u64,
    /// Of those, the answers outside 2xx/3xx (a shed request is one).
    pub non_2xx: u64,
    /// Requests in all.
    pub requests: u64,
}

fn duration(text: &str) -> Duration {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: f64 = number.parse().unwrap_or(0.0);
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => 0.0,
    };
    Duration::from_secs_f64(secs)
}

/// Lua for wrk: POST a new task each request.
pub const POST_TASK: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"title":"bench ' .. counter .. '","priority":"normal"}')
end
"#;

/// Runs wrk against `url` with `connections` for `seconds`, with an optional Lua `script`, sending
/// `token` as the bearer token.
pub fn run(
    token: &str,
    url: &str,
    connections: u32,
    seconds: u32,
    script: Option<&str>,
) -> anyhow::Result<WrkResult> {
    let threads = connections.clamp(1, 2);
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("--timeout")
        .arg("10s")
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
    let file;
    if let Some(script) = script {
        file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), script)?;
        command.arg("-s").arg(file.path());
    }
    let output = command.arg(url).output().map_err(|e| {
        anyhow::anyhow!("run wrk ({e}): apt-get install wrk, or scripts/install-deps --bench")
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    let mut result = WrkResult::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => result.rate = rate.parse().unwrap_or(0.0),
            ["50%", d] => result.p50 = duration(d),
            ["99%", d] => result.p99 = duration(d),
            ["Latency", _avg, _stdev, max, ..] => result.max = duration(max),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                result.non_2xx = n.parse::<u64>().unwrap_or(0);
                result.errors += result.non_2xx;
            }
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                result.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Ok(result)
}
