//! What a number in the report may be: one run's [`Sample`] (a value, or the reason
//! there is none), and a [`Figure`] summarising every run of one metric on one path
//! (median with min–max, or why it is not a figure). The rules that keep impossible
//! numbers out of the table live here: CPU below its floor is "too short to measure",
//! a per-item memory cost that is negative or implausible is "unstable" with its raw
//! readings, and a figure with any such run is not a figure.

use crate::measure::{Cpu, Settled};

/// One run's measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sample {
    /// A measured value.
    Value(f64),
    /// No value: why (with the raw readings).
    Unmeasured(String),
}

impl Sample {
    /// The value, if measured.
    pub fn value(&self) -> Option<f64> {
        match self {
            Sample::Value(v) => Some(*v),
            Sample::Unmeasured(_) => None,
        }
    }
}

/// CPU seconds per GB for `cpu` spent moving `bytes`; "too short to measure" below
/// the source's floor, with the bound that the floor implies.
pub fn cpu_per_gb(cpu: Cpu, bytes: u64) -> Sample {
    let gb = bytes as f64 / 1e9;
    if cpu.ns < cpu.floor_ns() || gb <= 0.0 {
        return Sample::Unmeasured(format!(
            "too short to measure: {:.1} ms CPU ({:?}) under the {} ms floor, \
             so below {:.2} s/GB",
            cpu.ns as f64 / 1e6,
            cpu.source,
            cpu.floor_ns() / 1_000_000,
            cpu.floor_ns() as f64 / 1e9 / gb
        ));
    }
    Sample::Value(cpu.ns as f64 / 1e9 / gb)
}

/// CPU percent of one core for `cpu` over `wall` seconds; "too short to measure" below
/// the floor.
pub fn cpu_percent(cpu: Cpu, wall: f64) -> Sample {
    if cpu.ns < cpu.floor_ns() || wall <= 0.0 {
        return Sample::Unmeasured(format!(
            "too short to measure: {:.1} ms CPU in {wall:.1} s, under the {} ms floor, \
             so below {:.2} %",
            cpu.ns as f64 / 1e6,
            cpu.floor_ns() / 1_000_000,
            100.0 * cpu.floor_ns() as f64 / 1e9 / wall
        ));
    }
    Sample::Value(100.0 * cpu.ns as f64 / 1e9 / wall)
}

/// Largest believable per-item cost (a tunnel, a node connection): 16 MiB.
pub const MAX_PER_ITEM: f64 = (16 << 20) as f64;

/// RSS growth per item between two steady states, with `items` held at the second.
/// Unstable (with the raw readings) when either state did not settle, the growth is
/// negative, smaller than the wobble of the readings, or above [`MAX_PER_ITEM`].
pub fn per_item(before: Settled, after: Settled, items: usize) -> Sample {
    let growth = after.mem.rss as f64 - before.mem.rss as f64;
    let per = growth / items.max(1) as f64;
    let noise = before.wobble.max(after.wobble) as f64;
    let why = if !(before.stable && after.stable) {
        Some("RSS did not settle")
    } else if growth <= 0.0 {
        Some("RSS did not grow")
    } else if growth <= noise {
        Some("growth within the readings' wobble")
    } else if per > MAX_PER_ITEM {
        Some("implausibly large")
    } else {
        None
    };
    match why {
        None => Sample::Value(per),
        Some(why) => Sample::Unmeasured(format!(
            "unstable: {why}: RSS {} → {} bytes (PSS {} → {}), wobble {} / {} bytes, \
             {items} items",
            before.mem.rss,
            after.mem.rss,
            opt(before.mem.pss),
            opt(after.mem.pss),
            before.wobble,
            after.wobble
        )),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |v| v.to_string())
}

/// Every run of one metric on one path, summarised.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// Every run measured.
    Measured {
        /// Median of the runs.
        median: f64,
        /// Smallest run.
        min: f64,
        /// Largest run.
        max: f64,
        /// Runs.
        runs: usize,
    },
    /// At least one run has no value: this one's reason, and how many runs lacked one.
    Unmeasured {
        /// The first run's reason.
        reason: String,
        /// Runs without a value.
        of: usize,
        /// Runs.
        runs: usize,
    },
}

impl Figure {
    /// The summary of `samples` (at least one).
    pub fn of(samples: &[Sample]) -> Figure {
        let mut values: Vec<f64> = samples.iter().filter_map(Sample::value).collect();
        let missing = samples.len() - values.len();
        if missing > 0 || values.is_empty() {
            let reason = samples
                .iter()
                .find_map(|s| match s {
                    Sample::Unmeasured(r) => Some(r.clone()),
                    Sample::Value(_) => None,
                })
                .unwrap_or_else(|| "no runs".into());
            return Figure::Unmeasured {
                reason,
                of: missing,
                runs: samples.len(),
            };
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Figure::Measured {
            median,
            min: values[0],
            max: values[n - 1],
            runs: n,
        }
    }

    /// The median, if measured.
    pub fn median(&self) -> Option<f64> {
        match self {
            Figure::Measured { median, .. } => Some(*median),
            Figure::Unmeasured { .. } => None,
        }
    }

    /// A table cell: `median (min–max)`, `median (1 run)`, or the short reason.
    pub fn cell(&self) -> String {
        match self {
            Figure::Measured {
                median,
                min,
                max,
                runs,
            } => {
                if *runs == 1 {
                    format!("{} (1 run)", num(*median))
                } else {
                    format!("{} ({}–{})", num(*median), num(*min), num(*max))
                }
            }
            Figure::Unmeasured { reason, of, runs } => {
                let short = reason.split(':').next().unwrap_or(reason);
                format!("{short} ({of}/{runs} runs)")
            }
        }
    }
}

/// A number at a precision fit for the table.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{CpuSource, Mem};

    fn settled(rss: u64) -> Settled {
        Settled {
            mem: Mem { rss, pss: None },
            stable: true,
            wobble: 4096,
        }
    }

    #[test]
    fn negative_memory_is_unstable_not_a_figure() {
        let s = per_item(settled(10 << 20), settled(9 << 20), 100);
        assert!(matches!(&s, Sample::Unmeasured(r) if r.starts_with("unstable")));
        assert_eq!(
            per_item(settled(1 << 20), settled(2 << 20), 256).value(),
            Some(4096.0)
        );
    }

    #[test]
    fn short_cpu_is_not_zero() {
        let cpu = Cpu {
            ns: 3_000_000,
            source: CpuSource::Schedstat,
        };
        assert!(cpu_per_gb(cpu, 1 << 20).value().is_none());
        let f = Figure::of(&[Sample::Value(2.0), cpu_per_gb(cpu, 1 << 20)]);
        assert_eq!(f.median(), None);
        assert!(f.cell().starts_with("too short to measure"));
    }

    #[test]
    fn spread_is_kept() {
        let f = Figure::of(&[3.0, 1.0, 2.0].map(Sample::Value));
        assert_eq!(f.cell(), "2.00 (1.00–3.00)");
    }
}
