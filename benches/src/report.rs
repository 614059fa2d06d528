//! Figures: latency percentiles, rates, peak memory, and the table every scenario prints.

use std::time::Duration;

/// Latencies of one operation.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Records one.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// The `q` quantile (0..=1).
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let index = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[index]
    }
}

/// A memory field (`VmRSS:`, `VmHWM:`) of process `pid` (this one when `None`), in MiB, from `/proc`.
pub fn memory_mib(pid: Option<u32>, field: &str) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak resident memory of process `pid` (this one when `None`), in MiB.
pub fn peak_rss_mib(pid: Option<u32>) -> f64 {
    memory_mib(pid, "VmHWM:")
}

/// One line of a result table.
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Operations per second.
    pub rate: Option<f64>,
    /// The raw limit's rate, to compare with.
    pub raw: Option<f64>,
    /// p50, p99, max.
    pub latency: Option<(Duration, Duration, Duration)>,
    /// A note (totals, times).
    pub note: String,
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Prints the rows as a Markdown table.
pub fn print(title: &str, rows: &[Row]) {
    println!("\n### {title}\n");
    println!("| measure | rate (/s) | raw limit (/s) | ratio | p50 ms | p99 ms | max ms | note |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let rate = r.rate.map(|x| format!("{x:.0}")).unwrap_or_default();
        let raw = r.raw.map(|x| format!("{x:.0}")).unwrap_or_default();
        let ratio = match (r.rate, r.raw) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.0} %", a / b * 100.0),
            _ => String::new(),
        };
        let (p50, p99, max) = r
            .latency
            .map(|(a, b, c)| (ms(a), ms(b), ms(c)))
            .unwrap_or_default();
        println!(
            "| {} | {rate} | {raw} | {ratio} | {p50} | {p99} | {max} | {} |",
            r.what, r.note
        );
    }
}
