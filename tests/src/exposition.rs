//! The Prometheus text format, read strictly. `prometheus_parse::Scrape::parse` passes over any line it
//! cannot read, so a broken exposition would still parse: [`parse`] first has openmetrics-parser (a
//! grammar of the whole format: names, labels, values, TYPE and HELP lines, families) accept all of it.
//! The tests then look samples up in prometheus-parse's simpler model, which leaves out the samples
//! whose label values hold a `}` (axum's route templates, `/api/v1/tasks/{id}`): none they look for.

use prometheus_parse::Scrape;

/// `text` parsed, once the whole of it was found well-formed; panics with the parser's complaint.
pub fn parse(text: &str) -> Scrape {
    if let Err(e) = openmetrics_parser::prometheus::parse_prometheus(text) {
        panic!("/metrics is not well-formed Prometheus text: {e:?}\n{text}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("read /metrics")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_broken_line_is_refused() {
        let good = "# TYPE a_total counter\na_total{route=\"/api/v1/tasks\"} 3\n\
                    a_total{route=\"/api/v1/tasks/{id}\"} 4\n";
        assert_eq!(super::parse(good).samples.len(), 1);
        for bad in [
            "# TYPE a_total counter\na_total{route=\"/x\" 3\n",
            "# TYPE a_total counter\na_total{route=\"/x\"} three\n",
            "# TYPE a_total counter\na_total 3 4 5\n",
        ] {
            let refused = std::panic::catch_unwind(|| super::parse(bad));
            assert!(refused.is_err(), "{bad}");
        }
    }
}
