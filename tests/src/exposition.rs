//! The Prometheus text format, read strictly. `prometheus_parse::Scrape::parse` passes over any line it
//! cannot read, so a broken exposition would still parse; [`parse`] first checks every line: each
//! sample reads as one (name, well-formed labels, a number, an optional timestamp, nothing after), each
//! `# TYPE` names a metric and a known type once, and each sample belongs to a declared family.

use std::collections::BTreeMap;

use prometheus_parse::{LineInfo, Scrape};

const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// `text` parsed, once every line of it was found well-formed; panics naming the first bad line.
pub fn parse(text: &str) -> Scrape {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| -> ! { panic!("/metrics line {}: {why}: {line:?}", n + 1) };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.first() {
                Some(&"TYPE") => {
                    let [_, name, kind] = words[..] else {
                        bad("a TYPE line is `# TYPE <name> <type>`")
                    };
                    if !metric_name(name) {
                        bad("not a metric name");
                    }
                    if !TYPES.contains(&kind) {
                        bad("not a metric type");
                    }
                    if !matches!(LineInfo::parse(line), LineInfo::Type { .. }) {
                        bad("not read as a TYPE line");
                    }
                    if families.insert(name.to_owned(), kind.to_owned()).is_some() {
                        bad("a second TYPE for the same metric");
                    }
                }
                Some(&"HELP") if words.len() < 2 || !metric_name(words[1]) => {
                    bad("a HELP line is `# HELP <name> <text>`")
                }
                // Any other comment is allowed.
                _ => {}
            }
            continue;
        }
        let sample = read_sample(trimmed).unwrap_or_else(|why| bad(why));
        // The crate reads the same name and value, except where a label value holds a `}`, which its
        // pattern cannot read (axum's route templates do: `/api/v1/tasks/{id}`).
        if !sample.labels.iter().any(|(_, v)| v.contains('}')) {
            match LineInfo::parse(line) {
                LineInfo::Sample {
                    metric_name, value, ..
                } if metric_name == sample.name && value == sample.value => {}
                _ => bad("prometheus-parse reads it otherwise"),
            }
        }
        if family_of(sample.name, &families).is_none() {
            bad("a sample of no declared TYPE");
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The declared family `sample` belongs to: itself, or a histogram's or summary's `_bucket`, `_sum`,
/// `_count`.
fn family_of<'a>(sample: &str, families: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some((name, _)) = families.get_key_value(sample) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = sample.strip_suffix(suffix)?;
        let (name, kind) = families.get_key_value(base)?;
        let fits = match *suffix {
            "_bucket" => kind == "histogram",
            _ => kind == "histogram" || kind == "summary",
        };
        fits.then_some(name.as_str())
    })
}

fn metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One sample line, read by the format's grammar.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: &'a str,
}

/// `<name>[{<label>="<value>",...}] <value> [<timestamp>]` and nothing after; label values with the
/// `\\`, `\"` and `\n` escapes only, a trailing comma allowed.
fn read_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !metric_name(name) {
        return Err("not a sample: no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start();
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once('=').ok_or("malformed labels")?;
            if !label_name(label.trim()) {
                return Err("malformed labels: not a label name");
            }
            let quoted = after
                .trim_start()
                .strip_prefix('"')
                .ok_or("malformed labels: an unquoted value")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                match chars.next().ok_or("malformed labels: an unclosed value")? {
                    (_, '\\') => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("malformed labels: a bad escape"),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.trim(), value));
            inner = quoted[close + 1..].trim_start();
            if let Some(after) = inner.strip_prefix(',') {
                inner = after;
            } else if !inner.starts_with('}') {
                return Err("malformed labels: no comma between labels");
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("a sample is `<name>{labels} <value> [timestamp]`");
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (value, timestamp) = match words[..] {
        [value] => (value, None),
        [value, at] => (value, Some(at)),
        _ => return Err("a sample is `<name>{labels} <value> [timestamp]`: nothing may follow"),
    };
    if !number(value) {
        return Err("the value is not a number");
    }
    if timestamp.is_some_and(|at| at.parse::<i64>().is_err()) {
        return Err("the timestamp is not an integer");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A Prometheus sample value: a float, `NaN`, or `±Inf`.
fn number(text: &str) -> bool {
    matches!(text, "NaN" | "+Inf" | "-Inf" | "Inf") || text.parse::<f64>().is_ok_and(f64::is_finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_exposition_parses() {
        let text = "# HELP a_total things\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\",} 3\n\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1 1700000000000\n";
        let scrape = parse(text);
        let a = scrape
            .samples
            .iter()
            .find(|s| s.metric == "a_total")
            .unwrap();
        assert_eq!(a.labels.get("x"), Some("1"));
        assert!(scrape.samples.iter().any(|s| s.metric == "h"));
    }

    #[test]
    fn a_brace_in_a_label_value_is_read_by_the_grammar() {
        let text = "# TYPE r counter\nr{route=\"/api/v1/tasks/{id}\",status=\"200\"} 1\n";
        parse(text);
        assert_eq!(
            read_sample("r{route=\"/t/{id}\"} 1").unwrap().labels,
            vec![("route", "/t/{id}".to_owned())]
        );
    }

    #[test]
    #[should_panic(expected = "not a sample")]
    fn a_line_that_is_no_sample_fails() {
        parse("# TYPE a counter\na 1\n{broken} 2\n");
    }

    #[test]
    #[should_panic(expected = "nothing may follow")]
    fn trailing_words_fail() {
        parse("# TYPE a counter\na 1 2 3\n");
    }

    #[test]
    #[should_panic(expected = "not a number")]
    fn a_value_that_is_no_number_fails() {
        parse("# TYPE a counter\na one\n");
    }

    #[test]
    #[should_panic(expected = "malformed labels")]
    fn unquoted_labels_fail() {
        parse("# TYPE a counter\na{x=1} 1\n");
    }

    #[test]
    #[should_panic(expected = "TYPE")]
    fn a_broken_type_line_fails() {
        parse("# TYPE a\na 1\n");
    }

    #[test]
    #[should_panic(expected = "no declared TYPE")]
    fn an_undeclared_sample_fails() {
        parse("# TYPE a counter\nb 1\n");
    }
}
