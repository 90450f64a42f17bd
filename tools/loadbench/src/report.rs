//! What a driver prints at its end: medians, the machine it ran on, and targets — each a
//! named bound on a measured ratio, reported as met or MISSED.

use std::fmt::Write as _;
use std::process::Command;

/// The median of `values` (sorted here; NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A comma-separated list of positive counts, e.g. `10,100,1000`.
pub fn number_list(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("{n:?} in {text:?} is not a positive count")),
        })
        .collect()
}

/// Today's date, `YYYY-MM-DD`, for chart notes.
pub fn today() -> String {
    Command::new("date")
        .arg("+%F")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `2 x <CPU model>, load 1.2 0.9 0.5`: how many cores, which, and how busy the machine was.
pub fn host_summary() -> String {
    // From /proc, not available_parallelism: a driver is pinned to one core by now.
    host_summary_from(
        &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
        &std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
    )
}

fn host_summary_from(cpuinfo: &str, loadavg: &str) -> String {
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |v| v.trim_start_matches([' ', '\t', ':']));
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("{cpus} x {cpu}, load {}", load.join(" "))
}

/// Which way a target bounds its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// Targets checked at the end of a run: `[met] what: value (at most N)`.
#[derive(Debug, Default)]
pub struct Targets {
    lines: String,
    checked: usize,
    missed: usize,
}

impl Targets {
    /// Checks `value` against `bound`; `excuse`, when given, is a reason the target does not
    /// apply this run (it is then met, with the reason shown).
    pub fn check(&mut self, what: &str, value: f64, bound: Bound, excuse: Option<&str>) {
        let ok = match bound {
            Bound::AtMost(limit) => value <= limit,
            Bound::AtLeast(limit) => value >= limit,
        } || excuse.is_some();
        let bound_text = match bound {
            Bound::AtMost(limit) => format!("at most {limit}"),
            Bound::AtLeast(limit) => format!("at least {limit}"),
        };
        let excuse = excuse.map_or(String::new(), |e| format!("; {e}"));
        let _ = writeln!(
            self.lines,
            "  [{}] {what}: {value:.3} ({bound_text}{excuse})",
            if ok { "met" } else { "MISSED" }
        );
        self.checked += 1;
        self.missed += usize::from(!ok);
    }

    /// The title with how many were missed, then one line per target.
    pub fn render(&self, title: &str) -> String {
        format!(
            "\n{title}: {} of {} missed\n{}",
            self.missed, self.checked, self.lines
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn number_lists_are_positive_counts() {
        assert_eq!(number_list("10, 100,1000"), Ok(vec![10, 100, 1000]));
        assert!(number_list("10,0").is_err());
        assert!(number_list("10,x").is_err());
        assert!(number_list("").is_err());
    }

    #[test]
    fn host_summary_counts_cores_and_shows_load() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Test CPU @ 2GHz\n\nprocessor\t: 1\n\
                       model name\t: Test CPU @ 2GHz\n";
        assert_eq!(
            host_summary_from(cpuinfo, "1.50 0.90 0.40 3/200 1234\n"),
            "2 x Test CPU @ 2GHz, load 1.50 0.90 0.40"
        );
    }

    #[test]
    fn targets_report_met_missed_and_excused() {
        let mut t = Targets::default();
        t.check("cpu/req vs nginx", 0.7, Bound::AtMost(0.8), None);
        t.check("req/s vs nginx", 1.1, Bound::AtLeast(1.2), None);
        t.check("req/s vs go", 1.1, Bound::AtLeast(1.5), Some("wrk-limited"));
        assert_eq!(
            t.render("targets"),
            "\ntargets: 1 of 3 missed\n  [met] cpu/req vs nginx: 0.700 (at most 0.8)\n  \
             [MISSED] req/s vs nginx: 1.100 (at least 1.2)\n  \
             [met] req/s vs go: 1.100 (at least 1.5; wrk-limited)\n"
        );
    }
}
