// SPDX-License-Identifier: GPL-3.0-or-later
//! The Grafana dashboard (docs/grafana-dashboard.json) against what pec's metrics endpoint
//! renders (`pec::metrics`, recorded into a local recorder with the endpoint's settings):
//! every metric its queries name exists, every label they select, group by or show in a
//! legend exists on it, every label value they match is one pec records, and every metric
//! pec defines is on the dashboard. It is a Grafana 9+ dashboard whose data source is the
//! input and variable DS_PROMETHEUS, with unique panel ids and a grid without overlaps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use pec::metrics::{self as m, Role};
use pec::store::{Health, LastSeal};
use serde_json::Value;

const ROLES: [Role; 4] = [Role::Access, Role::Filter, Role::Delivery, Role::Timers];
/// Labels that Prometheus adds when it scrapes.
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dashboard() -> Value {
    let path = repo().join("docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("docs/grafana-dashboard.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every metric of the endpoint with every helper recorded once: sample name (`_bucket`,
/// `_sum`, `_count` for the histogram) → its label names.
fn rendered() -> BTreeMap<String, BTreeSet<String>> {
    let recorder = m::recorder().expect("recorder");
    metrics::with_local_recorder(&recorder, || {
        m::announce();
        for role in ROLES {
            m::message(role, "kind", "outcome");
            m::latency(role, Duration::from_millis(30));
            m::tempfail(role, "cause");
        }
        m::timer_notice("12h", true);
        m::timer_notice("24h", false);
        for ok in [true, false] {
            m::index_sync(ok);
            m::seal(ok);
            m::seal_stamp(ok);
            m::reload(ok);
        }
        m::seal_stamps_pending(1);
        m::revocation_unknown_accepted();
        m::record_health_of(
            &Health {
                pending_timers: 2,
                quarantined: 1,
                last_seal: Some(LastSeal {
                    day: "2026-12-05".into(),
                    from_at: 1_796_425_200,
                    sealed_at: 1_796_515_200,
                    timestamped: false,
                }),
                index: Some((1_796_500_000, "ldap".into(), 12)),
                log_records: 40,
                oldest_record_at: Some(1_796_000_000),
            },
            1_796_520_000,
        );
    });
    let text = recorder.handle().render();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let end = line.find(['{', ' ']).expect("a sample line");
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let inner = &line[end + 1..line.find('}').expect("closing brace")];
            for pair in inner.split(',') {
                labels.insert(pair.split('=').next().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// The metric names that src/metrics.rs defines (`pub const X: &str = "pec_…";`).
fn defined() -> Vec<String> {
    let src = std::fs::read_to_string(repo().join("src/metrics.rs")).expect("src/metrics.rs");
    let names: Vec<String> = src
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"pec_"))
        .map(|l| l.split('"').nth(1).expect("a quoted name").to_string())
        .collect();
    assert!(
        names.len() >= 10,
        "few metric names found in src/metrics.rs: {names:?}"
    );
    names
}

/// Every string literal of the sources under src/: where label values come from.
fn source_literals() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for (i, piece) in text.split('"').enumerate() {
                    if i % 2 == 1 && piece.len() < 40 {
                        out.insert(piece.to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo().join("src"), &mut out);
    out
}

/// One label matcher: `label="value"`, or a regex with `=~`.
#[derive(Debug, PartialEq, Eq)]
struct Matcher {
    label: String,
    value: String,
    regex: bool,
}

/// What one PromQL expression uses.
#[derive(Debug, Default)]
struct Uses {
    /// Metric names, with the matchers written on each.
    metrics: Vec<(String, Vec<Matcher>)>,
    /// Labels of `by (…)` and `without (…)` clauses.
    grouping: BTreeSet<String>,
}

/// A small PromQL reader: enough for names, matchers and grouping clauses.
fn uses(expr: &str) -> Uses {
    let b = expr.as_bytes();
    let mut u = Uses::default();
    let mut i = 0;
    let ident = |i: usize| {
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':') {
            j += 1;
        }
        j
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        i
    };
    while i < b.len() {
        let c = b[i];
        if c == b'[' {
            i = expr[i..].find(']').map(|k| i + k + 1).expect("closing ]");
        } else if c == b'"' {
            i = expr[i + 1..]
                .find('"')
                .map(|k| i + k + 2)
                .expect("closing quote");
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let j = ident(i);
            let word = &expr[i..j];
            let k = skip_ws(j);
            if word == "by" || word == "without" {
                assert_eq!(b.get(k), Some(&b'('), "{expr}: {word} without (");
                let close = k + expr[k..].find(')').expect("closing )");
                for l in expr[k + 1..close].split(',') {
                    u.grouping.insert(l.trim().to_string());
                }
                i = close + 1;
                continue;
            }
            if word.starts_with("pec_") {
                let mut matchers = Vec::new();
                i = k;
                if b.get(k) == Some(&b'{') {
                    let close = k + expr[k..].find('}').expect("closing }");
                    for part in expr[k + 1..close]
                        .split(',')
                        .filter(|p| !p.trim().is_empty())
                    {
                        let (label, rest) =
                            part.split_at(part.find(['=', '!']).expect("an operator"));
                        let regex = rest.starts_with("=~") || rest.starts_with("!~");
                        let value = rest.split('"').nth(1).expect("a quoted value");
                        matchers.push(Matcher {
                            label: label.trim().to_string(),
                            value: value.to_string(),
                            regex,
                        });
                    }
                    i = close + 1;
                }
                u.metrics.push((word.to_string(), matchers));
                continue;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    u
}

/// Every panel, the rows' nested ones included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (expression, legend) of every query: the panels' targets and the variables' queries.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target without expr");
            out.push((
                expr.to_string(),
                t["legendFormat"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["definition"].as_str() {
            out.push((q.to_string(), String::new()));
        }
    }
    out
}

#[test]
fn every_query_names_metrics_labels_and_values_that_pec_renders() {
    let rendered = rendered();
    let literals = source_literals();
    let roles: BTreeSet<&str> = ROLES.iter().map(|r| r.label()).collect();
    let queries = queries(&dashboard());
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    for (expr, legend) in &queries {
        let u = uses(expr);
        assert!(!u.metrics.is_empty(), "{expr}: no pec metric");
        let mut labels: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
        for (name, matchers) in &u.metrics {
            let Some(own) = rendered.get(name) else {
                panic!(
                    "{expr}: {name} is not a metric pec renders ({:?})",
                    rendered.keys()
                );
            };
            labels.extend(own.iter().cloned());
            for Matcher {
                label,
                value,
                regex,
            } in matchers
            {
                assert!(
                    own.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                    "{expr}: {name} has no label {label} (it has {own:?})"
                );
                if value.starts_with('$') {
                    continue;
                }
                let alternatives: Vec<&str> = if *regex {
                    value.split('|').collect()
                } else {
                    vec![value.as_str()]
                };
                for v in alternatives {
                    let known = if label == "role" {
                        roles.contains(v)
                    } else {
                        literals.contains(v)
                    };
                    assert!(known, "{expr}: {label}=\"{v}\" is never recorded by pec");
                }
            }
        }
        for g in &u.grouping {
            assert!(
                labels.contains(g),
                "{expr}: groups by {g}, which its metrics lack"
            );
        }
        // A legend shows only labels the query keeps.
        for piece in legend.split("{{").skip(1) {
            let label = piece.split("}}").next().unwrap_or_default().trim();
            assert!(
                u.grouping.contains(label),
                "{expr}: the legend shows {{{{{label}}}}}, which the query does not keep"
            );
        }
    }
}

#[test]
fn every_metric_pec_defines_is_recorded_here_and_on_the_dashboard() {
    let rendered = rendered();
    let used: BTreeSet<String> = queries(&dashboard())
        .iter()
        .flat_map(|(e, _)| uses(e).metrics.into_iter().map(|(n, _)| n))
        .collect();
    for name in defined() {
        let samples: Vec<&String> = rendered
            .keys()
            .filter(|k| {
                *k == &name
                    || k.strip_prefix(name.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
            })
            .collect();
        assert!(
            !samples.is_empty(),
            "{name}: this test does not record it (add its helper to rendered())"
        );
        assert!(
            samples.iter().any(|s| used.contains(*s)),
            "{name}: not on the dashboard (docs/grafana-dashboard.json)"
        );
    }
    // The histogram is rendered with buckets, as the endpoint has it (histogram_quantile).
    assert!(rendered.contains_key("pec_latency_seconds_bucket"));
}

#[test]
fn the_reader_finds_names_matchers_and_grouping() {
    let u = uses(
        r#"sum by (role, le) (rate(pec_latency_seconds_bucket{role="access",outcome=~"a|b",instance=~"$instance"}[$__rate_interval])) / pec_up"#,
    );
    let names: Vec<&str> = u.metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pec_latency_seconds_bucket", "pec_up"]);
    let m = |label: &str, value: &str, regex| Matcher {
        label: label.into(),
        value: value.into(),
        regex,
    };
    assert_eq!(u.metrics[0].1[0], m("role", "access", false));
    assert_eq!(u.metrics[0].1[1], m("outcome", "a|b", true));
    assert_eq!(
        u.grouping,
        BTreeSet::from(["role".to_string(), "le".to_string()])
    );
    assert!(uses(r#"sum(rate(foo_total[5m]))"#).metrics.is_empty());
}

#[test]
fn it_is_an_importable_grafana_dashboard() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().expect("schemaVersion") >= 36,
        "Grafana 9+ schema"
    );
    assert!(!d["uid"].as_str().expect("uid").is_empty());
    assert!(!d["title"].as_str().expect("title").is_empty());
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(inputs
        .iter()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));
    let vars = d["templating"]["list"].as_array().expect("templating");
    assert!(vars.iter().any(|v| v["name"] == "DS_PROMETHEUS"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for p in panels(&d) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "panel {id}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("panels {other} and {id} overlap at ({cx}, {cy})");
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {id}: data source"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {id}: a target's data source"
            );
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "panel {id}: refId twice"
            );
        }
    }
}
