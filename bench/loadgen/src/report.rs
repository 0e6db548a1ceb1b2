//! Percentiles over recorded samples.

use std::time::Duration;

/// Latency samples in nanoseconds, sorted once when read.
#[derive(Default)]
pub(crate) struct Samples(Vec<u64>);

impl Samples {
    pub(crate) fn record(&mut self, elapsed: Duration) {
        self.0
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn extend(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The value below which `fraction` of the samples lie, in microseconds.
    pub(crate) fn percentile_us(&mut self, fraction: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let rank = (fraction * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)] as f64 / 1_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let mut samples = Samples::default();
        for us in 1..=1000u64 {
            samples.record(Duration::from_micros(us));
        }
        assert_eq!(samples.percentile_us(0.5), 501.0);
        assert_eq!(samples.percentile_us(0.99), 990.0);
        assert_eq!(samples.percentile_us(1.0), 1000.0);
        assert!(Samples::default().percentile_us(0.5).is_nan());
    }
}
