//! The unsupervised outlier score: a histogram-based outlier score (HBOS, Goldstein and
//! Dengel 2012). One histogram per feature, fitted on the network's own scored windows;
//! a window's score is the sum over features of `-ln(density)` of the bin it falls in,
//! so each feature's share of the score says why a window stands out. Features are
//! taken as `sign(x)·ln(1+|x|)` first, so that counts spanning decades bin evenly.
//!
//! Beyond the range a histogram was fitted on, the density decays exponentially from
//! the edge bin, one `e` per bin width.
//!
//! Chosen over an isolation forest because it is exact to explain per feature, costs
//! O(features) per window, trains in one pass and serialises to a few hundred numbers.

use serde::{Deserialize, Serialize};

use super::window::NAMES;

/// Bins per feature.
const BINS: usize = 10;
/// Share of training windows the threshold leaves above it, before the margin.
const QUANTILE: f64 = 0.995;

/// One feature's histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Histogram {
    lo: f64,
    hi: f64,
    /// Densities, the fullest bin at 1.
    density: Vec<f64>,
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    histograms: Vec<Histogram>,
    /// Density given to empty bins and values outside the fitted range.
    floor: f64,
    /// Scores above this are outliers.
    pub threshold: f64,
    /// Windows it was fitted on.
    pub trained_on: usize,
}

fn squash(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

impl Histogram {
    fn fit(values: &[f64]) -> Histogram {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // A feature that never varied still tolerates a nearby value.
        let (lo, hi) = if hi - lo < 1.0 {
            let mid = (hi + lo) / 2.0;
            (mid - 0.5, mid + 0.5)
        } else {
            (lo, hi)
        };
        let mut counts = [0f64; BINS];
        for &v in values {
            counts[Self::bin_of(lo, hi, v).unwrap_or(0)] += 1.0;
        }
        let top = counts.iter().copied().fold(1.0, f64::max);
        Histogram {
            lo,
            hi,
            density: counts.iter().map(|c| c / top).collect(),
        }
    }

    fn bin_of(lo: f64, hi: f64, v: f64) -> Option<usize> {
        if !(lo..=hi).contains(&v) {
            return None;
        }
        Some((((v - lo) / (hi - lo) * BINS as f64) as usize).min(BINS - 1))
    }

    /// The density at `v`. Beyond the fitted range it decays from the edge bin's by
    /// `e` per bin width, so a value just outside the range is not yet an outlier.
    fn density(&self, v: f64, floor: f64) -> f64 {
        let width = (self.hi - self.lo) / BINS as f64;
        let (edge, beyond) = if v < self.lo {
            (self.density[0], self.lo - v)
        } else if v > self.hi {
            (self.density[BINS - 1], v - self.hi)
        } else {
            let bin = Self::bin_of(self.lo, self.hi, v).unwrap_or(0);
            return self.density[bin].max(floor);
        };
        (edge * (-beyond / width).exp()).max(floor)
    }
}

impl Model {
    /// Fits on `rows` (feature vectors); the threshold is the training scores'
    /// [`QUANTILE`] plus `margin`. `None` with fewer than two rows.
    pub fn fit(rows: &[[f64; 13]], margin: f64) -> Option<Model> {
        if rows.len() < 2 {
            return None;
        }
        let squashed: Vec<[f64; 13]> = rows.iter().map(|r| r.map(squash)).collect();
        let histograms = (0..NAMES.len())
            .map(|i| Histogram::fit(&squashed.iter().map(|r| r[i]).collect::<Vec<_>>()))
            .collect();
        let mut model = Model {
            histograms,
            floor: 1.0 / (rows.len() as f64 + 1.0),
            threshold: f64::INFINITY,
            trained_on: rows.len(),
        };
        let mut scores: Vec<f64> = rows.iter().map(|r| model.score(r).0).collect();
        scores.sort_by(f64::total_cmp);
        let at = ((scores.len() as f64 * QUANTILE) as usize).min(scores.len() - 1);
        model.threshold = scores[at] + margin;
        Some(model)
    }

    /// The score of `row` and each feature's part of it.
    pub fn score(&self, row: &[f64; 13]) -> (f64, [f64; 13]) {
        let mut parts = [0f64; 13];
        for (i, h) in self.histograms.iter().enumerate().take(13) {
            parts[i] = -h.density(squash(row[i]), self.floor).ln();
        }
        (parts.iter().sum(), parts)
    }

    /// The names of the features that contribute most to `parts`, strongest first.
    pub fn drivers(parts: &[f64; 13]) -> Vec<String> {
        let mut order: Vec<usize> = (0..13).filter(|&i| parts[i] > 0.5).collect();
        order.sort_by(|&a, &b| parts[b].total_cmp(&parts[a]));
        order.iter().take(3).map(|&i| NAMES[i].to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(i: usize) -> [f64; 13] {
        let mut r = [0.0; 13];
        r[0] = 10.0 + (i % 7) as f64;
        r[1] = 3.0 + (i % 3) as f64;
        r[2] = 1.0 + (i % 2) as f64;
        r[5] = 200.0 + (i % 11) as f64 * 10.0;
        r
    }

    #[test]
    fn an_outlier_scores_above_the_threshold_and_names_its_feature() {
        let rows: Vec<_> = (0..500).map(normal).collect();
        let model = Model::fit(&rows, 2.0).unwrap();
        let above = rows
            .iter()
            .filter(|r| model.score(r).0 > model.threshold)
            .count();
        assert_eq!(above, 0, "training windows stay under the threshold");
        let mut odd = normal(3);
        odd[2] = 60.0;
        let (score, parts) = model.score(&odd);
        assert!(score > model.threshold, "{score} <= {}", model.threshold);
        assert_eq!(Model::drivers(&parts), ["distinct_ports"]);
    }
}
