//! `chinwag-bench table [FILE...]`: the README's Markdown table, made from
//! the JSON lines of a run (files, or standard input), so the table is
//! never typed by hand.

use std::io::Read;

use serde_json::Value;

use crate::report::Unit;

pub fn run(files: &[String]) -> Result<(), String> {
    let mut text = String::new();
    if files.is_empty() {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("stdin: {e}"))?;
    } else {
        for f in files {
            text.push_str(&std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?);
            text.push('\n');
        }
    }
    let mut lines = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if !l.starts_with('{') {
            continue; // the human table around the JSON lines
        }
        let v: Value = serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))?;
        lines.push(v);
    }
    if lines.is_empty() {
        return Err("no JSON lines in the input".into());
    }
    print!("{}", markdown(&lines));
    Ok(())
}

fn fmt(line: &Value, key: &str) -> Option<String> {
    let v = line["figures"][key].as_f64()?;
    let unit = line["units"][key]
        .as_str()
        .and_then(Unit::from_name)
        .unwrap_or(Unit::Count);
    Some(unit.fmt(v))
}

fn params(line: &Value) -> String {
    match line["params"].as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => String::new(),
    }
}

/// One table for every line: a row per figure the workload put in the
/// table, with its same-run reference and its target.
pub fn markdown(lines: &[Value]) -> String {
    let mut out = String::new();
    let mut commits: Vec<&str> = lines.iter().filter_map(|l| l["commit"].as_str()).collect();
    commits.dedup();
    let mut machines: Vec<&str> = lines.iter().filter_map(|l| l["machine"].as_str()).collect();
    machines.dedup();
    out.push_str(&format!(
        "Commit {}; {}.\n\n",
        commits.join(", "),
        machines.join("; ")
    ));
    out.push_str("| workload | figure | chinwagd | reference (same run) | target | |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for line in lines {
        let workload = line["workload"].as_str().unwrap_or("?");
        let mut rows = line["rows"].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            // A workload that chose no rows: every figure it has, so none
            // is left out of the table unseen.
            if let Some(figures) = line["figures"].as_object() {
                rows = figures
                    .keys()
                    .map(|k| Value::Array(vec![Value::String(k.clone()), Value::Null]))
                    .collect();
            }
        }
        // The peak RSS closes each workload's rows, wherever it was added.
        rows.sort_by_key(|r| r[0] == "server_peak_rss_mib");
        if line["ok"] == Value::Bool(false) {
            let why = line["problems"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "| {workload} | did not run correctly: {} | | | | |\n",
                why.replace('|', "/")
            ));
        }
        for (i, row) in rows.iter().enumerate() {
            let Some(key) = row[0].as_str() else { continue };
            let Some(value) = fmt(line, key) else {
                continue;
            };
            let label = line["labels"][key].as_str().unwrap_or(key);
            let reference = row[1]
                .as_str()
                .and_then(|r| {
                    let v = fmt(line, r)?;
                    let l = line["labels"][r].as_str().unwrap_or(r);
                    let l = l.strip_prefix("reference: ").unwrap_or(l);
                    Some(format!("{v} ({l})"))
                })
                .unwrap_or_default();
            let (target, mark) = match line["targets"].get(key) {
                Some(t) => {
                    let op = if t["op"] == "<=" { "≤" } else { "≥" };
                    let unit = line["units"][key]
                        .as_str()
                        .and_then(Unit::from_name)
                        .unwrap_or(Unit::Count);
                    let v = t["value"].as_f64().map(|v| unit.fmt(v)).unwrap_or_default();
                    let met = if t["met"] == Value::Bool(true) {
                        "met"
                    } else {
                        "missed"
                    };
                    (format!("{op} {v}"), met)
                }
                None => (String::new(), ""),
            };
            let name = if i == 0 {
                let p = params(line);
                if p.is_empty() {
                    format!("**{workload}**")
                } else {
                    format!("**{workload}** ({p})")
                }
            } else {
                String::new()
            };
            out.push_str(&format!(
                "| {name} | {label} | {value} | {reference} | {target} | {mark} |\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_without_rows_shows_every_figure() {
        let line: Value = serde_json::from_str(
            r#"{"workload":"media","commit":"abc","machine":"m","params":{"calls":10},
               "figures":{"added_p50_us":80.5,"relayed_pps":1000.0},
               "units":{"added_p50_us":"us","relayed_pps":"per_s"},
               "labels":{"added_p50_us":"added by the relay, p50","relayed_pps":"relayed packets/s"},
               "targets":{},"rows":[],"ok":true}"#,
        )
        .unwrap();
        let t = markdown(&[line]);
        assert!(t.contains("| added by the relay, p50 | 80.5 µs |"), "{t}");
        assert!(t.contains("| relayed packets/s | 1.0 k/s |"), "{t}");
    }

    #[test]
    fn a_line_becomes_rows_with_reference_and_target() {
        let line: Value = serde_json::from_str(
            r#"{"workload":"p2p-paced","commit":"abc","machine":"m","params":{"clients":1000},
               "figures":{"p50_us":80.5,"ref_one_way_p50_us":40.0,"p99_us":900.0},
               "units":{"p50_us":"us","ref_one_way_p50_us":"us","p99_us":"us"},
               "labels":{"p50_us":"latency p50","ref_one_way_p50_us":"reference: one-way p50","p99_us":"latency p99"},
               "targets":{"p99_us":{"op":"<=","value":1000,"met":true}},
               "rows":[["p50_us","ref_one_way_p50_us"],["p99_us",null]],"ok":true}"#,
        )
        .unwrap();
        let t = markdown(&[line]);
        assert!(t.starts_with("Commit abc; m."), "{t}");
        assert!(
            t.contains("| **p2p-paced** (clients=1000) | latency p50 | 80.5 µs | 40.0 µs (one-way p50) |  |  |"),
            "{t}"
        );
        assert!(
            t.contains("| latency p99 | 900.0 µs |  | ≤ 1000.0 µs | met |"),
            "{t}"
        );
    }
}
