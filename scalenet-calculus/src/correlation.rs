//! Forward spatial correlation of an activation's within-channel part.
//!
//! [`crate::moments`] splits an activation into what is the same at every position of a channel
//! (`coherent`: the channel offsets, the ReLU mean) and what varies around it, the *within* part,
//! of second moment `second - coherent`, which the calculus takes to be independent between
//! positions. With weights drawn i.i.d. that holds in expectation over the weights: a convolution's
//! output at two positions shares taps, but `E[W_t W_t'] = 0` for two different taps, so the
//! shared taps add nothing on average. Centred rows (`centred_weights`) break it: the entries of a
//! row that sums to zero are negatively correlated, `E[W_i W_j] = -s^2 / N` for `i != j`, so the
//! output is a high-pass filter of its input whose within part is *anti*-correlated between
//! neighbours, and a later average pool keeps less of it than `1 / k^2` (a 3x3 centred filter on
//! one channel removes the spatial mean altogether).
//!
//! [`SpatialCorrelation`] carries `rho(d)`, the correlation of the within part between positions
//! at offset `d` of one channel, for `|d| <= REACH` on each axis (0 beyond), through:
//!
//! - **a weight layer** of kernel `k` and stride `s`: with `E[W_t W_t'] = s^2 (delta - c / N)`
//!   (`c = 1` for centred rows, 0 otherwise) and within parts independent between channels,
//!   `R_y(d) = s^2 n_in (k^2 R(s d) - (c / N) sum_e P(e) R(s d + e))`, where `P(e) = (k - |e_h|)
//!   (k - |e_w|)` counts the tap pairs at offset `e`; the within part's second moment changes by
//!   `(k^2 - (c / N) sum_e P(e) rho(e)) / (k^2 (1 - c / N))` against the white-input rule;
//! - **a ReLU** (or leaky ReLU) of a centred Gaussian pair: the arc-cosine kernel,
//!   `E[relu(z) relu(z')] = (sqrt(1 - rho^2) + rho (pi - acos rho)) / 2 pi`, less the squared
//!   mean; the channel offsets are left out of this map (exact when they are zero);
//! - **average pooling** `k x k`, stride `k`: the window sums, `sum_e P(e) rho(k D + e)`, over the
//!   same at `D = 0`, and the within part's second moment times `sum_e P(e) rho(e) / k^2`;
//! - **a residual sum**: the branches' within covariances add.

use std::f64::consts::PI;

/// Offsets `-REACH..=REACH` on each axis are carried; the correlation is taken as 0 beyond.
pub const REACH: isize = 4;
const SIDE: usize = (2 * REACH + 1) as usize;

/// `rho(d)` of an activation's within-channel part, by spatial offset `d = (dh, dw)`, `rho(0) = 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpatialCorrelation {
    values: [f64; SIDE * SIDE],
}

impl SpatialCorrelation {
    /// Independent positions, as the paper assumes.
    pub const WHITE: SpatialCorrelation = {
        let mut values = [0.0; SIDE * SIDE];
        values[SIDE * SIDE / 2] = 1.0;
        SpatialCorrelation { values }
    };

    fn from_fn(f: impl Fn(isize, isize) -> f64) -> Self {
        let mut values = [0.0; SIDE * SIDE];
        for (i, value) in values.iter_mut().enumerate() {
            *value = f(i as isize / SIDE as isize - REACH, i as isize % SIDE as isize - REACH);
        }
        SpatialCorrelation { values }
    }

    /// `rho(dh, dw)`; 0 beyond [`REACH`].
    pub fn at(&self, dh: isize, dw: isize) -> f64 {
        if dh.abs() > REACH || dw.abs() > REACH {
            return 0.0;
        }
        self.values[((dh + REACH) * SIDE as isize + dw + REACH) as usize]
    }

    /// Whether positions are uncorrelated (the paper's assumption).
    pub fn is_white(&self) -> bool {
        *self == Self::WHITE
    }

    /// `sum_e P(e) rho(base + e)` over the offsets `e` between two positions of a `k x k` window,
    /// `P(e) = (k - |e_h|) (k - |e_w|)` pairs each.
    fn window_sum(&self, kernel: usize, base: (isize, isize)) -> f64 {
        let k = kernel as isize;
        let mut sum = 0.0;
        for eh in 1 - k..k {
            for ew in 1 - k..k {
                let rho = self.at(base.0 + eh, base.1 + ew);
                if rho != 0.0 {
                    sum += ((k - eh.abs()) * (k - ew.abs())) as f64 * rho;
                }
            }
        }
        sum
    }

    /// Through a weight layer of `kernel` and `stride` whose rows have `centred_row` entries and
    /// sum to zero (`None`: i.i.d. rows): the output's correlation, and what the within part's
    /// second moment is multiplied by against the rule for white input.
    pub fn through_weights(&self, kernel: usize, stride: usize, centred_row: Option<usize>) -> (Self, f64) {
        let s = stride as isize;
        let taps = (kernel * kernel) as f64;
        let Some(row) = centred_row.filter(|&n| n > 1) else {
            return (Self::from_fn(|dh, dw| self.at(s * dh, s * dw)), 1.0);
        };
        if self.is_white() && kernel == 1 {
            return (Self::WHITE, 1.0);
        }
        let c = 1.0 / row as f64;
        let covariance =
            |dh: isize, dw: isize| taps * self.at(s * dh, s * dw) - c * self.window_sum(kernel, (s * dh, s * dw));
        let variance = covariance(0, 0);
        if variance <= 0.0 {
            return (Self::WHITE, 0.0);
        }
        let correlation = Self::from_fn(|dh, dw| covariance(dh, dw) / variance);
        (correlation, variance / (taps * (1.0 - c)))
    }

    /// Through a ReLU (or leaky ReLU of `slope`) of a centred Gaussian: the arc-cosine kernel,
    /// normalized.
    pub fn through_activation(&self, slope: f64) -> Self {
        if self.is_white() {
            return Self::WHITE;
        }
        let a = slope;
        // Covariance of max(z, a z) at correlation rho for unit variance:
        // a^2 rho + a (1 - a) rho + (1 - a)^2 (J(rho) - 1 / 2 pi).
        let covariance = |rho: f64| {
            let rho = rho.clamp(-1.0, 1.0);
            let arc = ((1.0 - rho * rho).sqrt() + rho * (PI - rho.acos())) / (2.0 * PI);
            a * rho + (1.0 - a) * (1.0 - a) * (arc - 1.0 / (2.0 * PI))
        };
        let variance = covariance(1.0);
        Self::from_fn(|dh, dw| if (dh, dw) == (0, 0) { 1.0 } else { covariance(self.at(dh, dw)) / variance })
    }

    /// Through `k x k` average pooling with stride `k`: the output's correlation, and the factor
    /// on the within part's second moment (`1 / k^2` for white input).
    pub fn through_avg_pool(&self, kernel: usize) -> (Self, f64) {
        let k = kernel as isize;
        let inside = self.window_sum(kernel, (0, 0));
        let taps = (kernel * kernel) as f64;
        if self.is_white() {
            return (Self::WHITE, 1.0 / taps);
        }
        if inside <= 0.0 {
            return (Self::WHITE, 0.0);
        }
        let correlation = Self::from_fn(|dh, dw| self.window_sum(kernel, (k * dh, k * dw)) / inside);
        (correlation, inside / (taps * taps))
    }

    /// The factor on the within part's second moment of the mean over a whole `height x width`
    /// map: `sum_d (H - |dh|) (W - |dw|) rho(d) / (H W)^2` (`1 / H W` for white input).
    pub fn whole_map_factor(&self, height: usize, width: usize) -> f64 {
        let (h, w) = (height as isize, width as isize);
        let mut sum = 0.0;
        for dh in -REACH.min(h - 1)..=REACH.min(h - 1) {
            for dw in -REACH.min(w - 1)..=REACH.min(w - 1) {
                sum += ((h - dh.abs()) * (w - dw.abs())) as f64 * self.at(dh, dw);
            }
        }
        (sum / ((h * w) as f64).powi(2)).max(0.0)
    }

    /// The correlation of the sum of two independent parts with within second moments `a` and `b`.
    pub fn mixed(&self, a: f64, other: &Self, b: f64) -> Self {
        if a + b <= 0.0 {
            return Self::WHITE;
        }
        Self::from_fn(|dh, dw| (a * self.at(dh, dw) + b * other.at(dh, dw)) / (a + b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A centred 3x3 filter on white single-channel input sums to zero, so its output has no
    /// spatial mean: the correlations over all offsets sum to -1 besides rho(0), by hand
    /// `rho(1, 0) = -6 / 72`, `rho(1, 1) = -4 / 72` (`P(e) / (k^2 (N - 1))`, `N = 9`).
    #[test]
    fn a_centred_filter_on_one_channel_removes_the_spatial_mean() {
        let (rho, factor) = SpatialCorrelation::WHITE.through_weights(3, 1, Some(9));
        assert!((factor - 1.0).abs() < 1e-12, "white input keeps the planned variance: {factor}");
        assert!((rho.at(1, 0) + 6.0 / 72.0).abs() < 1e-12);
        assert!((rho.at(1, 1) + 4.0 / 72.0).abs() < 1e-12);
        assert!((rho.at(2, 2) + 1.0 / 72.0).abs() < 1e-12);
        assert_eq!(rho.at(3, 0), 0.0);
        let total: f64 = (-2..=2).flat_map(|dh| (-2..=2).map(move |dw| (dh, dw))).map(|(h, w)| rho.at(h, w)).sum();
        assert!(total.abs() < 1e-12, "{total}");
        // The spatial mean over a large map vanishes: 2x2 pooling keeps (4 - 8 * 6/72 - 4 * 4/72) / 16.
        let (_, pooled) = rho.through_avg_pool(2);
        assert!((pooled - (4.0 - 8.0 * 6.0 / 72.0 - 4.0 * 4.0 / 72.0) / 16.0).abs() < 1e-12);
        // Over many channels (N = 27 x 9) the anti-correlation is 27 times weaker.
        let (wide, _) = SpatialCorrelation::WHITE.through_weights(3, 1, Some(243));
        assert!((wide.at(1, 0) + 6.0 / (9.0 * 242.0)).abs() < 1e-12);
    }

    /// The arc-cosine map at rho = 0, 1 and one value between, against a numeric integral over
    /// a correlated Gaussian pair.
    #[test]
    fn relu_correlation_is_the_arc_cosine_kernel() {
        let map = |rho: f64| {
            let input = SpatialCorrelation::from_fn(|dh, dw| match (dh, dw) {
                (0, 0) => 1.0,
                (0, 1) => rho,
                _ => 0.0,
            });
            input.through_activation(0.0).at(0, 1)
        };
        assert_eq!(map(0.0), 0.0);
        assert!((map(1.0) - 1.0).abs() < 1e-12);
        // Midpoint rule over z, z' = rho z + sqrt(1 - rho^2) u.
        let rho: f64 = -0.3;
        let (steps, range) = (800, 8.0);
        let dz = 2.0 * range / steps as f64;
        let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
        let mut product = 0.0;
        for i in 0..steps {
            let z = -range + (i as f64 + 0.5) * dz;
            for j in 0..steps {
                let u = -range + (j as f64 + 0.5) * dz;
                let other = rho * z + (1.0 - rho * rho).sqrt() * u;
                product += z.max(0.0) * other.max(0.0) * pdf(z) * pdf(u) * dz * dz;
            }
        }
        let mean_sq = 1.0 / (2.0 * PI);
        let expected = (product - mean_sq) / (0.5 - mean_sq);
        assert!((map(rho) - expected).abs() < 1e-5, "{} vs {expected}", map(rho));
    }

    #[test]
    fn white_stays_white_through_iid_weights_and_pooling() {
        let white = SpatialCorrelation::WHITE;
        assert!(white.through_weights(3, 1, None).0.is_white());
        assert!(white.through_activation(0.0).is_white());
        let (pooled, factor) = white.through_avg_pool(2);
        assert!(pooled.is_white() && (factor - 0.25).abs() < 1e-12);
        assert!((white.whole_map_factor(4, 4) - 1.0 / 16.0).abs() < 1e-12);
    }
}
