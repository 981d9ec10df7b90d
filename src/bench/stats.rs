//! Repeated measurements and how they are reported: median and spread (min..max).
use serde::Serialize;

/// Runs of one measurement, in units per second (or milliseconds for latencies).
#[derive(Debug, Clone, Serialize)]
pub struct Samples {
    pub runs: Vec<f64>,
}

impl Samples {
    pub fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// (max − min) ÷ median: how noisy the runs were.
    pub fn spread(&self) -> f64 {
        let min = self.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (max - min) / self.median()
    }
}

/// USER_HZ on Linux: the unit of the CPU times in `/proc`.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user and system) used so far by process `pid` (`"self"`: this one); 0
/// where `/proc` cannot tell (another OS, a process gone).
pub fn process_cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) close with ')'.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / TICKS_PER_SECOND)
        })
        .unwrap_or(0.0)
}

/// CPU seconds every process on the machine used so far (broker and database too).
pub fn machine_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let cpu = stat.lines().next()?;
            let values: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
            Some(
                values.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum::<f64>()
                    / TICKS_PER_SECOND,
            )
        })
        .unwrap_or(0.0)
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The goal, if the figure has one, and whether it is met.
    pub target: Option<String>,
    pub met: Option<bool>,
    pub detail: String,
    /// For ratios: the two medians divided.
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
}

/// A ratio of two medians measured in the same run, with its goal.
pub fn ratio(id: &'static str, name: &str, num: &Samples, den: &Samples, goal: f64, detail: String) -> Figure {
    let value = num.median() / den.median();
    Figure {
        id,
        name: name.to_string(),
        value,
        unit: "ratio",
        target: Some(format!("≥ {goal}")),
        met: Some(value >= goal),
        detail,
        numerator: Some(num.median()),
        denominator: Some(den.median()),
    }
}

/// A measured value with an upper bound as its goal (latency, memory).
pub fn at_most(id: &'static str, name: &str, value: f64, unit: &'static str, goal: f64, detail: String) -> Figure {
    Figure {
        id,
        name: name.to_string(),
        value,
        unit,
        target: Some(format!("≤ {goal}")),
        met: Some(value <= goal),
        detail,
        numerator: None,
        denominator: None,
    }
}

/// The p-th percentile (0–100) of unsorted values.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

pub fn describe(samples: &Samples, unit: &str) -> String {
    format!(
        "median {:.0} {unit} (spread {:.0}%, {} runs)",
        samples.median(),
        samples.spread() * 100.0,
        samples.runs.len()
    )
}

/// Where an average record's time went inside a member between two readings of its
/// timings, in words; `None` when it applied nothing in between.
pub fn time_inside(before: &consumers::member::Timings, now: &consumers::member::Timings) -> Option<String> {
    let (age, wait, apply) = now.means_since(before)?;
    let batches = now.batches - before.batches;
    let per_batch = (now.records - before.records) as f64 / batches.max(1) as f64;
    Some(format!(
        "created → polled {age:.1} ms (produce, ack, fetch, client queue), buffer wait {wait:.1} ms, \
         apply {apply:.1} ms; {batches} batches of {per_batch:.1} records"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_of_odd_and_even_run_counts() {
        let odd = Samples { runs: vec![3.0, 1.0, 2.0] };
        assert_eq!(odd.median(), 2.0);
        assert_eq!(odd.spread(), 1.0);
        let even = Samples { runs: vec![4.0, 1.0, 2.0, 3.0] };
        assert_eq!(even.median(), 2.5);
    }

    #[test]
    fn ratio_reports_whether_the_goal_is_met() {
        let fast = Samples { runs: vec![80.0] };
        let ceiling = Samples { runs: vec![100.0] };
        assert_eq!(ratio("P", "x", &fast, &ceiling, 0.7, String::new()).met, Some(true));
        assert_eq!(ratio("P", "x", &fast, &ceiling, 0.9, String::new()).met, Some(false));
    }
}
