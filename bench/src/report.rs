//! The benchmark report: one row per figure, printed as a Markdown table (pasteable into
//! `bench/RESULTS.md`) or as JSON with `--json`.

use serde::Serialize;

use crate::procfs::Machine;
use crate::stats::Summary;

/// One figure of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// "W1" … "W4" or "scale".
    pub(crate) workload: &'static str,
    /// What was measured, in words.
    pub(crate) metric: String,
    /// The unit of the numbers.
    pub(crate) unit: &'static str,
    /// Median and spread over the runs; `None` when nothing could be measured.
    pub(crate) summary: Option<Summary>,
    /// The target for this figure, for reference only (never asserted).
    pub(crate) target: &'static str,
    /// Load average (1, 5, 15 min) before and after the measurement.
    pub(crate) load: String,
}

impl Row {
    /// A row without its load average, which the caller fills in.
    pub(crate) fn new(
        workload: &'static str,
        metric: String,
        unit: &'static str,
        summary: Option<Summary>,
        target: &'static str,
    ) -> Row {
        Row { workload, metric, unit, summary, target, load: String::new() }
    }
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// When the run started (`date`).
    pub(crate) date: String,
    /// The machine.
    pub(crate) machine: Machine,
    /// How the cluster was set up, in words.
    pub(crate) setup: Vec<String>,
    /// The figures.
    pub(crate) rows: Vec<Row>,
    /// Observations printed under the table (CPU split per workload, failures).
    pub(crate) notes: Vec<String>,
}

impl Report {
    /// Prints the report as text with a Markdown table.
    pub(crate) fn print_table(&self) {
        let m = &self.machine;
        println!("date: {}", self.date);
        println!(
            "machine: {} CPUs, {}, {:.1} GiB RAM, open files limit {}, cpuidle {}, {} build",
            m.cpus,
            m.cpu_model,
            m.memory_bytes as f64 / f64::from(1u32 << 30),
            m.open_files_limit,
            m.idle,
            m.profile
        );
        for line in &self.setup {
            println!("{line}");
        }
        println!();
        println!("| workload | figure | median | spread (min-max) | runs | target | load avg (before -> after) |");
        println!("| --- | --- | ---: | ---: | ---: | --- | --- |");
        for row in &self.rows {
            let (median, spread, runs) = match row.summary {
                Some(s) => (
                    format!("{} {}", format_number(s.median), row.unit),
                    format!("{}-{}", format_number(s.min), format_number(s.max)),
                    s.runs.to_string(),
                ),
                None => ("n/a".into(), "n/a".into(), "0".into()),
            };
            println!(
                "| {} | {} | {median} | {spread} | {runs} | {} | {} |",
                row.workload, row.metric, row.target, row.load
            );
        }
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }

    /// Prints the report as one JSON document.
    ///
    /// # Errors
    /// If serialization fails (it cannot for these types).
    pub(crate) fn print_json(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(self)?);
        Ok(())
    }
}

/// Formats a figure with thousands separators and a precision that suits its size.
pub(crate) fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let decimals = if value.abs() >= 100.0 || value.fract() == 0.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(frac) => format!("{sign}{grouped}.{frac}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(value: f64, expect: &str) {
        assert_eq!(format_number(value), expect);
    }

    #[test]
    fn numbers_are_grouped_and_rounded() {
        check(0.5, "0.50");
        check(0.0, "0");
        check(2.0, "2");
        check(12.34, "12.3");
        check(999.6, "1,000");
        check(1_234_567.0, "1,234,567");
        check(-4321.0, "-4,321");
    }
}
