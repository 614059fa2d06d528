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

    /// Runs `op`, recording how long it took: the one way the scenarios time an operation.
    pub async fn measure<T>(&mut self, op: impl Future<Output = T>) -> T {
        let began = std::time::Instant::now();
        let answer = op.await;
        self.push(began.elapsed());
        answer
    }

    /// p50, p99 and max: the figures a [`Row`] shows.
    pub fn summary(&mut self) -> (Duration, Duration, Duration) {
        (self.quantile(0.5), self.quantile(0.99), self.quantile(1.0))
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

/// Proportional resident memory of process `pid` (its shared pages divided among their sharers), in
/// MiB.
pub fn pss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
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
#[derive(Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Operations per second.
    pub rate: Option<f64>,
    /// The raw limit's rate, to compare with.
    pub raw: Option<f64>,
    /// p50, p99, max.
    pub latency: Option<(Duration, Duration, Duration)>,
    /// Resident memory of the hive's processes, in MiB.
    pub rss: Option<f64>,
    /// A note (totals, times).
    pub note: String,
}

/// A titled table of rows: what a scenario reports.
#[derive(Clone)]
pub struct Table {
    /// What the scenario measured.
    pub title: String,
    /// Its rows.
    pub rows: Vec<Row>,
}

fn median_of<T: Copy + PartialOrd>(mut values: Vec<T>) -> Option<T> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len() / 2).copied()
}

/// The tables of several runs of one scenario, merged: each figure of each row is the median of the
/// runs' (the note is the last run's).
pub fn medians(runs: Vec<Vec<Table>>) -> Vec<Table> {
    let count = runs.len();
    let Some(last) = runs.last().cloned() else {
        return Vec::new();
    };
    if count == 1 {
        return last;
    }
    last.into_iter()
        .enumerate()
        .map(|(t, table)| {
            let rows = table
                .rows
                .iter()
                .enumerate()
                .map(|(r, row)| {
                    let each: Vec<&Row> = runs
                        .iter()
                        .filter_map(|run| run.get(t).and_then(|table| table.rows.get(r)))
                        .collect();
                    let pick = |f: &dyn Fn(&Row) -> Option<f64>| {
                        median_of(each.iter().filter_map(|row| f(row)).collect())
                    };
                    let latency = row.latency.map(|_| {
                        let at = |i: usize| {
                            median_of(
                                each.iter()
                                    .filter_map(|row| row.latency)
                                    .map(|l| [l.0, l.1, l.2][i])
                                    .collect(),
                            )
                            .unwrap_or_default()
                        };
                        (at(0), at(1), at(2))
                    });
                    Row {
                        what: row.what.clone(),
                        rate: pick(&|row| row.rate),
                        raw: pick(&|row| row.raw),
                        latency,
                        rss: pick(&|row| row.rss),
                        note: row.note.clone(),
                    }
                })
                .collect();
            Table {
                title: format!("{} — median of {count} runs", table.title),
                rows,
            }
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Prints a table in Markdown.
pub fn print(table: &Table) {
    println!("\n### {}\n", table.title);
    println!(
        "| measure | rate (/s) | raw limit (/s) | ratio | p50 ms | p99 ms | max ms | RSS MiB | note |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &table.rows {
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
        let rss = r.rss.map(|x| format!("{x:.0}")).unwrap_or_default();
        println!(
            "| {} | {rate} | {raw} | {ratio} | {p50} | {p99} | {max} | {rss} | {} |",
            r.what, r.note
        );
    }
}
