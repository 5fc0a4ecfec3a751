//! Figures, targets, the human table and the JSON lines.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    PerSec,
    Ms,
    Us,
    Secs,
    MiB,
    GBps,
    Pct,
    Count,
    /// A ratio of two figures ("2.1×").
    Ratio,
    /// A score such as PESQ's MOS-LQO.
    Score,
}

impl Unit {
    /// The unit's name in the JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Unit::PerSec => "per_s",
            Unit::Ms => "ms",
            Unit::Us => "us",
            Unit::Secs => "s",
            Unit::MiB => "MiB",
            Unit::GBps => "GB/s",
            Unit::Pct => "%",
            Unit::Count => "count",
            Unit::Ratio => "x",
            Unit::Score => "score",
        }
    }

    pub fn from_name(name: &str) -> Option<Unit> {
        [
            Unit::PerSec,
            Unit::Ms,
            Unit::Us,
            Unit::Secs,
            Unit::MiB,
            Unit::GBps,
            Unit::Pct,
            Unit::Count,
            Unit::Ratio,
            Unit::Score,
        ]
        .into_iter()
        .find(|u| u.name() == name)
    }

    pub fn fmt(self, v: f64) -> String {
        match self {
            Unit::PerSec if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            Unit::PerSec if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
            Unit::PerSec => format!("{v:.0} /s"),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::Us => format!("{v:.1} µs"),
            Unit::Secs => format!("{v:.3} s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::GBps => format!("{v:.2} GB/s"),
            Unit::Pct => format!("{v:.2} %"),
            Unit::Count if v != v.trunc() && v.abs() < 100.0 => format!("{v:.1}"),
            Unit::Count => format!("{v:.0}"),
            Unit::Ratio => format!("{v:.2}×"),
            Unit::Score => format!("{v:.2}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub value: f64,
    pub unit: Unit,
    pub goal: Option<Goal>,
}

impl Figure {
    pub fn met(&self) -> Option<bool> {
        self.goal.map(|g| match g {
            Goal::AtLeast(t) => self.value >= t,
            Goal::AtMost(t) => self.value <= t,
        })
    }
    fn goal_text(&self) -> String {
        match self.goal {
            Some(Goal::AtLeast(t)) => format!("≥ {}", self.unit.fmt(t)),
            Some(Goal::AtMost(t)) => format!("≤ {}", self.unit.fmt(t)),
            None => String::new(),
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub workload: String,
    pub params: Vec<(&'static str, String)>,
    pub figures: Vec<Figure>,
    /// The README table's rows for this workload: a figure, and the
    /// physical reference measured beside it in the same run, if any.
    pub rows: Vec<(&'static str, Option<&'static str>)>,
    /// Things that mean the benchmark or the server is broken (exit non-zero).
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// What every JSON line says about where it was measured.
pub struct Meta {
    /// The commit the bench (and the chinwagd beside it) was built from.
    pub commit: String,
    /// CPU model, cores, memory, kernel.
    pub machine: String,
}

impl Meta {
    pub fn here() -> Meta {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("model name")?
                        .split_once(':')
                        .map(|(_, v)| v.trim().to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mem = crate::server::meminfo_kib("MemTotal").map_or(0, |k| k / 1024 / 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let virt =
            std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|t| t.contains(" hypervisor"));
        Meta {
            commit: env!("CHINWAG_BENCH_COMMIT").to_string(),
            machine: format!(
                "{cpu}, {cores} cores{}, {mem} GiB, Linux {kernel}",
                if virt { " (virtual machine)" } else { "" }
            ),
        }
    }
}

impl Report {
    pub fn new(workload: &str) -> Self {
        Report {
            workload: workload.into(),
            ..Default::default()
        }
    }
    pub fn param(&mut self, k: &'static str, v: impl ToString) {
        self.params.push((k, v.to_string()));
    }
    pub fn fig(
        &mut self,
        key: &'static str,
        label: &'static str,
        value: f64,
        unit: Unit,
        goal: Option<Goal>,
    ) {
        self.figures.push(Figure {
            key,
            label,
            value,
            unit,
            goal,
        });
    }
    /// Put `fig` in the README table, beside `reference` if given.
    pub fn row(&mut self, fig: &'static str, reference: Option<&'static str>) {
        self.rows.push((fig, reference));
    }

    pub fn failed(workload: &str, why: String) -> Self {
        let mut r = Report::new(workload);
        r.problems.push(why);
        r
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "== {}  ({})", self.workload, params.join(" "));
        let _ = writeln!(s, "   {:<34} {:>14}   target", "figure", "value");
        for f in &self.figures {
            let mark = match f.met() {
                Some(true) => "ok",
                Some(false) => "MISSED",
                None => "",
            };
            let _ = writeln!(
                s,
                "   {:<34} {:>14}   {:<14} {}",
                f.label,
                f.unit.fmt(f.value),
                f.goal_text(),
                mark
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "   note: {n}");
        }
        for p in &self.problems {
            let _ = writeln!(s, "   PROBLEM: {p}");
        }
        s
    }

    pub fn json(&self, meta: &Meta) -> String {
        use serde_json::{json, Map, Value};
        let num = |v: f64| {
            if v.is_finite() {
                json!(v)
            } else {
                Value::Null
            }
        };
        let mut params = Map::new();
        for (k, v) in &self.params {
            let val = match (v.parse::<i64>(), v.parse::<f64>()) {
                (Ok(i), _) => json!(i),
                (_, Ok(f)) => num(f),
                _ => json!(v),
            };
            params.insert((*k).into(), val);
        }
        let (mut figures, mut units, mut labels, mut targets) =
            (Map::new(), Map::new(), Map::new(), Map::new());
        for f in &self.figures {
            figures.insert(f.key.into(), num(f.value));
            units.insert(f.key.into(), json!(f.unit.name()));
            labels.insert(f.key.into(), json!(f.label));
            if let Some(g) = f.goal {
                let (op, t) = match g {
                    Goal::AtLeast(t) => (">=", t),
                    Goal::AtMost(t) => ("<=", t),
                };
                targets.insert(
                    f.key.into(),
                    json!({"op": op, "value": num(t), "met": f.met() == Some(true)}),
                );
            }
        }
        let rows: Vec<Value> = self.rows.iter().map(|(f, r)| json!([f, r])).collect();
        let mut line = json!({
            "workload": self.workload,
            "commit": meta.commit,
            "machine": meta.machine,
            "params": params,
            "figures": figures,
            "targets": targets,
            "units": units,
            "labels": labels,
            "rows": rows,
            "notes": self.notes,
            "targets_met": self.figures.iter().all(|f| f.met() != Some(false)),
            "ok": self.problems.is_empty(),
        });
        if !self.problems.is_empty() {
            line["problems"] = json!(self.problems);
        }
        line.to_string()
    }
}
