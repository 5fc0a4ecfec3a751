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
    /// A score such as PESQ's MOS-LQO.
    Score,
}

impl Unit {
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
            Unit::Count => format!("{v:.0}"),
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
    /// Things that mean the benchmark or the server is broken (exit non-zero).
    pub problems: Vec<String>,
    pub notes: Vec<String>,
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

    pub fn json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(s, "\"workload\":{}", jstr(&self.workload));
        s.push_str(",\"params\":{");
        for (i, (k, v)) in self.params.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let val = if v.parse::<f64>().is_ok() {
                v.clone()
            } else {
                jstr(v)
            };
            let _ = write!(s, "{sep}{}:{val}", jstr(k));
        }
        s.push_str("},\"figures\":{");
        for (i, f) in self.figures.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(s, "{sep}{}:{}", jstr(f.key), jnum(f.value));
        }
        s.push_str("},\"targets\":{");
        let mut first = true;
        for f in &self.figures {
            let Some(g) = f.goal else { continue };
            let (op, t) = match g {
                Goal::AtLeast(t) => (">=", t),
                Goal::AtMost(t) => ("<=", t),
            };
            let sep = if first { "" } else { "," };
            first = false;
            let _ = write!(
                s,
                "{sep}{}:{{\"op\":\"{op}\",\"value\":{},\"met\":{}}}",
                jstr(f.key),
                jnum(t),
                f.met() == Some(true)
            );
        }
        let all_met = self.figures.iter().all(|f| f.met() != Some(false));
        let _ = write!(
            s,
            "}},\"targets_met\":{all_met},\"ok\":{}",
            self.problems.is_empty()
        );
        if !self.problems.is_empty() {
            let list: Vec<String> = self.problems.iter().map(|p| jstr(p)).collect();
            let _ = write!(s, ",\"problems\":[{}]", list.join(","));
        }
        s.push('}');
        s
    }
}

fn jnum(v: f64) -> String {
    if v.is_finite() {
        if v == v.trunc() && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v:.4}")
        }
    } else {
        "null".into()
    }
}

fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
