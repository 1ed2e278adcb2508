//! Forward and backward second moments through each op (Appendices A and B).
//!
//! The paper propagates the uncentred second moment `E[x^2]` under the assumption that inputs to
//! ReLU are centred and symmetric. That holds after every weight layer (zero-mean weights, zero
//! biases), but the output of a ReLU has mean `sqrt(E[z^2] / 2 pi)`: `mean^2 / E[x^2] = 1/pi`.
//! Averaging k x k such entries keeps the mean and shrinks only the variance, so average pooling
//! after a ReLU divides `E[x^2]` by about 2, not by `k^2 = 4`. We therefore carry the first
//! moment beside the second, with the exact moments of a rectified Gaussian, and reduce to the
//! paper's rules whenever the mean is zero.
//!
//! One step further: a convolution of post-ReLU input gives each output channel a random offset
//! `mu sum(W)`, the same at every position, carrying the input's `mean^2/E[x^2]` share of its
//! second moment. Pooling keeps such offsets too. So we also carry the *channel-coherent* moment
//! `E_c[m_c^2]`, the second moment of each channel's spatial mean: the part pooling cannot reduce.
//! For i.i.d. entries it is `mean^2`.
//!
//! And one for finite width: a row of `N` i.i.d. Gaussian weights gives its output channel a
//! variance `w^T Sigma w` that differs from channel to channel by `2 / N` relative (`Var` of a
//! quadratic form, `2 tr(Sigma^2) / tr(Sigma)^2`). A ReLU turns that into channel offsets, since a
//! channel of scale `s` gets the mean `s / sqrt(2 pi)`: offsets of variance `Var_c(s_c) / 2 pi`,
//! which the calculus's infinite-width limit does not have, and which pooling and a coherent
//! backward signal make count (see [`crate::coherence`]). We carry that *dispersion*
//! `Var_c(v_c) / E_c[v_c]^2` of the channels' variances `v_c` around their own means.

use std::cell::RefCell;
use std::collections::HashMap;
use std::f64::consts::{FRAC_1_SQRT_2, PI};

use crate::correlation::SpatialCorrelation;

/// Element-wise moments of an activation at initialization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Uncentred second moment `E[x^2]`.
    pub second: f64,
    /// First moment `E[x]`.
    pub mean: f64,
    /// `E_c[m_c^2]` for the spatial mean `m_c` of each channel (`>= mean^2`); for a vector, the
    /// second moment itself.
    pub coherent: f64,
    /// `Var_c(v_c) / E_c[v_c]^2` for the variance `v_c` of each channel around its own mean (for a
    /// vector, of each entry over samples): how much the finite-width weight layers before made
    /// the channels' scales differ. 0 for the network input.
    pub dispersion: f64,
    /// `E_c[mu_c^2]` for the mean `mu_c` of each channel (each entry of a vector) over the inputs:
    /// the part of the second moment that is the same for every input (`>= mean^2`). On a map it
    /// is about `coherent`, whose spatial means vary a little with the input; on a vector, where
    /// `coherent` is the whole second moment, it is what the output calibration leaves out.
    pub fixed: f64,
    /// The within-channel part's correlation between positions (`second - coherent` of it is
    /// independent between positions unless centred rows made it otherwise; see
    /// [`crate::correlation`]).
    pub correlation: SpatialCorrelation,
    /// Whether every entry is `>= 0` (the output of a ReLU), so a further ReLU is the identity.
    pub nonnegative: bool,
}

impl Moments {
    /// Centred, symmetric data with `E[x^2] = second`: the network input of assumption 1.
    pub fn centred(second: f64) -> Self {
        Moments {
            second,
            mean: 0.0,
            coherent: 0.0,
            dispersion: 0.0,
            fixed: 0.0,
            correlation: SpatialCorrelation::WHITE,
            nonnegative: false,
        }
    }

    /// `E[x^2] - E[x]^2`.
    pub fn variance(&self) -> f64 {
        (self.second - self.mean * self.mean).max(0.0)
    }

    /// The standard deviation, `sqrt(variance)`.
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// The standard deviation of what varies with the input: `sqrt(E[x^2] - fixed)`.
    pub fn input_dependent_std(&self) -> f64 {
        (self.second - self.fixed.max(self.mean * self.mean)).max(0.0).sqrt()
    }

    /// Moments of `factor * x`.
    pub fn scaled(self, factor: f64) -> Self {
        Moments {
            second: self.second * factor * factor,
            mean: self.mean * factor,
            coherent: self.coherent * factor * factor,
            dispersion: self.dispersion,
            fixed: self.fixed * factor * factor,
            correlation: self.correlation,
            nonnegative: if factor >= 0.0 { self.nonnegative } else { self.nonnegative && self.second == 0.0 },
        }
    }

    /// `mean^2 / E[x^2]`.
    pub fn mean_fraction(&self) -> f64 {
        if self.second > 0.0 {
            (self.mean * self.mean / self.second).min(1.0)
        } else {
            0.0
        }
    }

    /// What a weight layer whose rows sum to zero sees of this input: `sum_i W_i (mean + e_i) =
    /// sum_i W_i e_i`, so the common mean drops out of the second moment and of every channel's
    /// offset (`coherent - mean^2` is what the channels' offsets differ by). Zero padding breaks
    /// the sum at border outputs; that remainder is not modelled.
    pub fn without_common_mean(self) -> Self {
        let mean_sq = self.mean * self.mean;
        Moments {
            second: (self.second - mean_sq).max(0.0),
            mean: 0.0,
            coherent: (self.coherent - mean_sq).max(0.0),
            dispersion: self.dispersion,
            fixed: (self.fixed - mean_sq).max(0.0),
            correlation: self.correlation,
            nonnegative: false,
        }
    }

    /// The same moments seen as a vector: every entry is its own channel, so all of the second
    /// moment is coherent.
    pub fn as_vector(self) -> Self {
        Moments { coherent: self.second, correlation: SpatialCorrelation::WHITE, ..self }
    }
}

/// What an op does to the moments: the output moments, and `E[dx^2] / E[dy^2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// The moments of the op's output.
    pub output: Moments,
    /// `E[dx^2] / E[dy^2]`: what the op multiplies the backward second moment by.
    pub backward_gain: f64,
}

impl Transfer {
    /// An op that changes nothing.
    pub fn identity(input: Moments) -> Self {
        Transfer { output: input, backward_gain: 1.0 }
    }

    /// A fixed multiplier `u`: both second moments scale by `u^2` (Appendix B, scalar multipliers).
    pub fn scale(input: Moments, factor: f64) -> Self {
        Transfer { output: input.scaled(factor), backward_gain: factor * factor }
    }
}

pub(crate) fn standard_normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x * FRAC_1_SQRT_2))
}

fn standard_normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// Leaky ReLU `max(z, a z)` of a Gaussian `z` with the given moments (`a = 0`: ReLU).
///
/// Forward: `E[relu(z)] = mu Phi + sigma phi`, `E[relu(z)^2] = (mu^2 + sigma^2) Phi + mu sigma phi`
/// at `mu / sigma`, and the same for `relu(-z)`. Backward: the gradient passes where `z > 0` and is
/// multiplied by `a` elsewhere, so `E[dx^2] = (Phi + a^2 (1 - Phi)) E[dy^2]`. For centred input
/// this is Appendix B's halving, `(1 + a^2)/2`.
pub fn leaky_relu(input: Moments, slope: f64) -> Transfer {
    if input.nonnegative {
        return Transfer::identity(input);
    }
    let out = Rectified::of(&input, slope);
    Transfer {
        output: Moments {
            second: out.second,
            mean: out.mean,
            coherent: out.coherent.min(out.second),
            dispersion: out.dispersion,
            fixed: out.fixed.min(out.second),
            correlation: input.correlation.through_activation(slope),
            nonnegative: slope == 0.0,
        },
        backward_gain: out.p_positive + slope * slope * (1.0 - out.p_positive),
    }
}

/// What a (leaky) ReLU's output moments take a quadrature for.
#[derive(Clone, Copy)]
struct Rectified {
    mean: f64,
    second: f64,
    coherent: f64,
    dispersion: f64,
    fixed: f64,
    p_positive: f64,
}

thread_local! {
    /// The last results of [`Rectified::compute`] by their inputs' bits. Planning meets the same
    /// activation input many times (every build of the plan, the nominal chain and the real one,
    /// the layers of a deep chain that the fixed scalars bring to the same moments), and each
    /// quadrature takes thousands of evaluations of `erf` and `exp`. The function is pure, so a
    /// hit returns exactly what it would compute.
    static RECTIFIED: RefCell<HashMap<[u64; 6], Rectified>> = RefCell::new(HashMap::new());
}

/// Entries [`RECTIFIED`] keeps before it starts over: a few hundred kB.
const RECTIFIED_CAPACITY: usize = 4096;

impl Rectified {
    fn of(input: &Moments, slope: f64) -> Rectified {
        let key = [input.second, input.mean, input.coherent, input.dispersion, input.fixed, slope].map(f64::to_bits);
        if let Some(known) = RECTIFIED.with(|cache| cache.borrow().get(&key).copied()) {
            return known;
        }
        let computed = Rectified::compute(input, slope);
        RECTIFIED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= RECTIFIED_CAPACITY {
                cache.clear();
            }
            cache.insert(key, computed);
        });
        computed
    }

    fn compute(input: &Moments, slope: f64) -> Rectified {
        // Channel means m ~ N(mean, coherent - mean^2) around which entries vary with variance
        // (second - coherent) times the channel's scale factor (see [`scale_factors`]); each
        // channel's output mean is the rectified mean at m.
        let between = (input.coherent - input.mean * input.mean).max(0.0).sqrt();
        let within = (input.second - input.coherent).max(0.0).sqrt();
        let fixed = rectified_fixed(input, slope);
        // Without a within part (a vector: each entry is its own channel) the scales do not matter.
        if input.dispersion <= 0.0 || within == 0.0 {
            let (mean, second, p_positive) = rectified(input.mean, input.std(), slope);
            let coherent =
                standard_normal_expectation(|z| rectified(input.mean + between * z, within, slope).0.powi(2));
            return Rectified { mean, second, coherent, dispersion: 0.0, fixed, p_positive };
        }
        // Per channel, at offset m and scale factor f: [mean, second, mean^2, P(z > 0), variance,
        // variance^2], averaged over both.
        let channel = |offset: f64, sigma: f64| {
            let (m, sq, p) = rectified(offset, sigma, slope);
            [m, sq, m * m, p, sq - m * m, (sq - m * m).powi(2)]
        };
        let mut sums = [0.0; 6];
        for (scale, weight) in scale_factors(input.dispersion) {
            let sigma = within * scale.sqrt();
            let moments = if between == 0.0 {
                channel(input.mean, sigma)
            } else {
                standard_normal_expectations(|z| channel(input.mean + between * z, sigma))
            };
            for (sum, moment) in sums.iter_mut().zip(moments) {
                *sum += weight * moment;
            }
        }
        let [mean, second, coherent, p_positive, variance, variance_sq] = sums;
        let dispersion = if variance > 0.0 { (variance_sq / (variance * variance) - 1.0).max(0.0) } else { 0.0 };
        Rectified { mean, second, coherent, dispersion, fixed, p_positive }
    }
}

/// `E_c[mu_c^2]` after a (leaky) ReLU: each channel's mean over the inputs `N(mean, fixed -
/// mean^2)`, around which it varies with the rest of the second moment, times its scale factor.
fn rectified_fixed(input: &Moments, slope: f64) -> f64 {
    let between = (input.fixed - input.mean * input.mean).max(0.0).sqrt();
    let within = (input.second - input.fixed.max(input.mean * input.mean)).max(0.0).sqrt();
    let scales: Vec<(f64, f64)> = if input.dispersion > 0.0 && within > 0.0 {
        scale_factors(input.dispersion).collect()
    } else {
        vec![(1.0, 1.0)]
    };
    scales
        .into_iter()
        .map(|(scale, weight)| {
            let sigma = within * scale.sqrt();
            weight
                * if between == 0.0 {
                    rectified(input.mean, sigma, slope).0.powi(2)
                } else {
                    standard_normal_expectation(|z| rectified(input.mean + between * z, sigma, slope).0.powi(2))
                }
        })
        .sum()
}

/// A channel's variance as a multiple of the mean one, `(factor, probability)`: log-normal with
/// mean 1 and relative variance `dispersion` (a positive law with the first two moments right),
/// by 8-point Gauss-Hermite quadrature.
pub(crate) fn scale_factors(dispersion: f64) -> impl Iterator<Item = (f64, f64)> {
    // Physicists' Gauss-Hermite nodes and weights, n = 8 (the weights sum to sqrt(pi)).
    const NODES: [f64; 4] =
        [0.381_186_990_207_322_1, 1.157_193_712_446_780_2, 1.981_656_756_695_843, 2.930_637_420_257_244];
    const WEIGHTS: [f64; 4] =
        [0.661_147_012_558_241_3, 0.207_802_325_814_891_9, 0.017_077_983_007_413_475, 0.000_199_604_072_211_367_62];
    let log_variance = dispersion.max(0.0).ln_1p();
    let sigma = log_variance.sqrt();
    NODES.into_iter().zip(WEIGHTS).flat_map(move |(node, weight)| {
        let probability = weight / PI.sqrt();
        [-node, node].map(|x| ((std::f64::consts::SQRT_2 * x * sigma - 0.5 * log_variance).exp(), probability))
    })
}

/// The density at 0 of an activation with these moments: its channels' offsets
/// `N(mean, coherent - mean^2)` around which entries vary with variance `second - coherent`.
pub fn density_at_zero(input: &Moments) -> f64 {
    let between = (input.coherent - input.mean * input.mean).max(0.0).sqrt();
    let within = (input.second - input.coherent).max(0.0).sqrt();
    if within <= 0.0 {
        return 0.0;
    }
    standard_normal_expectation(|g| standard_normal_pdf((input.mean + between * g) / within) / within)
}

const EXPECTATION_STEPS: usize = 400;

/// `E[f(z)]` for standard normal `z`, by the midpoint rule on [-8, 8] (f is smooth here).
pub(crate) fn standard_normal_expectation(f: impl Fn(f64) -> f64) -> f64 {
    standard_normal_expectations(|z| [f(z)])[0]
}

/// [`standard_normal_expectation`] of several functions computed together.
pub(crate) fn standard_normal_expectations<const K: usize>(f: impl Fn(f64) -> [f64; K]) -> [f64; K] {
    let mut sums = [0.0; K];
    for &(z, weight) in expectation_nodes() {
        for (sum, value) in sums.iter_mut().zip(f(z)) {
            *sum += weight * value;
        }
    }
    sums
}

/// The midpoint rule's nodes and weights `(z, pdf(z) dz)`, computed once: planning a deep network
/// runs this quadrature tens of thousands of times.
fn expectation_nodes() -> &'static [(f64, f64); EXPECTATION_STEPS] {
    static NODES: std::sync::OnceLock<[(f64, f64); EXPECTATION_STEPS]> = std::sync::OnceLock::new();
    NODES.get_or_init(|| {
        let dz = 16.0 / EXPECTATION_STEPS as f64;
        std::array::from_fn(|i| {
            let z = -8.0 + (i as f64 + 0.5) * dz;
            (z, standard_normal_pdf(z) * dz)
        })
    })
}

/// Mean, second moment and `P(z > 0)` of `max(z, a z)` for `z ~ N(mu, sigma^2)`.
fn rectified(mu: f64, sigma: f64, slope: f64) -> (f64, f64, f64) {
    let (positive, positive_sq, negative, negative_sq, p_positive) = if sigma == 0.0 {
        let p = if mu > 0.0 { 1.0 } else { 0.0 };
        (mu.max(0.0), mu.max(0.0).powi(2), (-mu).max(0.0), (-mu).max(0.0).powi(2), p)
    } else {
        let ratio = mu / sigma;
        let cdf = standard_normal_cdf(ratio);
        let pdf = standard_normal_pdf(ratio);
        let total = mu * mu + sigma * sigma;
        (
            mu * cdf + sigma * pdf,
            total * cdf + mu * sigma * pdf,
            -mu * (1.0 - cdf) + sigma * pdf,
            total * (1.0 - cdf) - mu * sigma * pdf,
            cdf,
        )
    };
    (positive - slope * negative, positive_sq + slope * slope * negative_sq, p_positive)
}

/// Average pooling over `k x k` windows with stride `k`: each channel's spatial mean is kept, the
/// entries' variation around it is divided by `k^2` (independent entries; by the sum of their
/// correlations over the window otherwise, see [`crate::correlation`]). Each input feeds one
/// output with weight `1/k^2`, so `E[dx^2] = E[dy^2] / k^4` (Appendix B).
pub fn avg_pool(input: Moments, kernel: usize) -> Transfer {
    let (correlation, within_factor) = input.correlation.through_avg_pool(kernel);
    averaged(input, within_factor, (kernel * kernel) as f64, correlation)
}

/// Global average pooling over a `height x width` map: one window as large as the image.
pub fn global_average(input: Moments, height: usize, width: usize) -> Transfer {
    let within_factor = input.correlation.whole_map_factor(height, width);
    averaged(input, within_factor, (height * width) as f64, SpatialCorrelation::WHITE)
}

fn averaged(input: Moments, within_factor: f64, window: f64, correlation: SpatialCorrelation) -> Transfer {
    let coherent = input.coherent.max(input.mean * input.mean).min(input.second);
    Transfer {
        output: Moments {
            second: (input.second - coherent) * within_factor + coherent,
            mean: input.mean,
            coherent,
            dispersion: input.dispersion,
            fixed: input.fixed.min(input.second),
            correlation,
            nonnegative: input.nonnegative,
        },
        backward_gain: 1.0 / (window * window),
    }
}

/// Convolution or linear layer with i.i.d. centred weights (Appendix A, eqs. 9-10), extended by the
/// padding `coverage`: the fraction of (output position, kernel tap) pairs that land inside the
/// input (1 without padding). Zero padding feeds zeros, so it lowers both moments by that fraction.
///
/// `E[y^2] = n_in k^2 cov E[W^2] E[x^2]` (uncentred: the weights are centred, the input need not
/// be) and `E[dx^2] = (rho_out^2 / rho_in^2) n_out k^2 cov E[W^2] E[dy^2]`.
pub fn weight_layer(input: Moments, geometry: &WeightGeometry, weight_second_moment: f64) -> Transfer {
    let taps = (geometry.kernel * geometry.kernel) as f64 * geometry.coverage * weight_second_moment;
    let area_ratio = geometry.area_out as f64 / geometry.area_in as f64;
    let gain = geometry.fan_in as f64 * taps;
    // Each output channel's spatial mean is the same weighted sum of the input channels' means.
    let coherent = if geometry.area_out == 1 { gain * input.second } else { gain * input.coherent };
    let dispersion = row_dispersion(input.dispersion, geometry.fan_in * geometry.kernel * geometry.kernel);
    Transfer {
        output: Moments { coherent, dispersion, fixed: gain * input.fixed, ..Moments::centred(gain * input.second) },
        backward_gain: area_ratio * geometry.fan_out as f64 * taps,
    }
}

/// The dispersion of the output channels' variances `w^T Sigma w` for rows `w` of `n` i.i.d.
/// Gaussian entries: `2 tr(Sigma^2) / tr(Sigma)^2`, with `Sigma` diagonal over channels (whose
/// variances have dispersion `input`) and taps (independent around the channel offsets), is
/// `2 (1 + input) / n`.
pub(crate) fn row_dispersion(input: f64, n: usize) -> f64 {
    2.0 * (1.0 + input) / n.max(1) as f64
}

/// The sizes of a convolution or linear layer that its moments depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightGeometry {
    /// Input channels or features, `n_l`: those one output sees (per group for a grouped
    /// convolution).
    pub fan_in: usize,
    /// Output channels or features, `n_{l+1}`: those one input feeds (per group).
    pub fan_out: usize,
    /// The kernel size `k_l` (1 for a linear layer).
    pub kernel: usize,
    /// Spatial area of the input, `rho_l^2`.
    pub area_in: usize,
    /// Spatial area of the output, `rho_{l+1}^2`.
    pub area_out: usize,
    /// Fraction of (output position, tap) pairs inside the unpadded input.
    pub coverage: f64,
}

/// Fraction of (output position, tap) pairs of a 1-d window that land inside an input of `size`.
///
/// In closed form, for windows that tile the padded input exactly (`(size + 2 padding - kernel)`
/// divisible by `stride`, which shape inference requires): the windows mirror each other about
/// the centre, so the taps in the right padding are as many as in the left, and the `o`-th window
/// has `clamp(padding - o stride, 0, kernel)` taps in the left padding.
pub fn coverage_1d(size: usize, kernel: usize, stride: usize, padding: usize, output: usize) -> f64 {
    let (k, s, p, n) = (kernel as u128, stride as u128, padding as u128, output as u128);
    // Windows entirely in the left padding's reach: `o` with `p - o s >= k`.
    let full = if p >= k { ((p - k) / s + 1).min(n) } else { 0 };
    // Windows that start inside the left padding: `o s < p`.
    let touching = p.div_ceil(s).min(n);
    // Sum of `p - o s` for `o` in `full..touching`.
    let count = touching.saturating_sub(full);
    let partial = count * p - s * (full + touching.saturating_sub(1)) * count / 2;
    let left = full * k + partial;
    let total = n * k;
    // `size` is implied by the exact tiling: `(output - 1) stride + kernel = size + 2 padding`.
    debug_assert_eq!((n - 1) * s + k, size as u128 + 2 * p);
    (total - 2 * left.min(total / 2)) as f64 / total as f64
}

/// Ratio of activation scaling factors `sigma_out / sigma_in` across an op, eq. (1):
/// `sigma = n rho^2 E[dx^2] E[x^2]`, and `E[dx_in^2] = backward_gain E[dy^2]`.
pub fn scaling_ratio(input: &Moments, numel_in: usize, transfer: &Transfer, numel_out: usize) -> f64 {
    (numel_out as f64 * transfer.output.second) / (numel_in as f64 * input.second * transfer.backward_gain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed form counts what a loop over every (output, tap) pair counts.
    #[test]
    fn coverage_in_closed_form_matches_counting() {
        for size in 1..12 {
            for kernel in 1..8 {
                for padding in 0..5 {
                    for stride in 1..4 {
                        let padded = size + 2 * padding;
                        if kernel > padded || (padded - kernel) % stride != 0 {
                            continue;
                        }
                        let output = (padded - kernel) / stride + 1;
                        let inside: usize = (0..output)
                            .map(|o| {
                                (0..kernel)
                                    .filter(|&t: &usize| {
                                        (o * stride + t).checked_sub(padding).is_some_and(|i| i < size)
                                    })
                                    .count()
                            })
                            .sum();
                        let expected = inside as f64 / (output * kernel) as f64;
                        let got = coverage_1d(size, kernel, stride, padding, output);
                        assert!(
                            (got - expected).abs() < 1e-12,
                            "size {size} k {kernel} p {padding} s {stride}: {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn relu_of_centred_input_halves_both_moments() {
        let t = leaky_relu(Moments::centred(3.0), 0.0);
        assert!((t.output.second - 1.5).abs() < 1e-12);
        assert!((t.backward_gain - 0.5).abs() < 1e-12);
        // E[relu(z)] = sigma / sqrt(2 pi)
        assert!((t.output.mean - (3.0f64 / (2.0 * PI)).sqrt()).abs() < 1e-12);
        assert!((t.output.mean_fraction() - 1.0 / PI).abs() < 1e-12);
    }

    #[test]
    fn leaky_relu_of_centred_input_scales_by_half_of_one_plus_slope_squared() {
        let t = leaky_relu(Moments::centred(1.0), 0.2);
        assert!((t.output.second - 0.52).abs() < 1e-12);
        assert!((t.backward_gain - 0.52).abs() < 1e-12);
    }

    #[test]
    fn relu_preserves_the_scaling_factor_for_centred_input() {
        let input = Moments::centred(0.7);
        let t = leaky_relu(input, 0.0);
        assert!((scaling_ratio(&input, 10, &t, 10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn relu_of_nonnegative_input_is_identity() {
        let once = leaky_relu(Moments::centred(1.0), 0.0).output;
        assert_eq!(leaky_relu(once, 0.0), Transfer::identity(once));
    }

    #[test]
    fn relu_moments_match_numerical_integration_for_shifted_gaussian() {
        let (mu, sigma) = (0.4, 1.3);
        let input = Moments { second: mu * mu + sigma * sigma, mean: mu, coherent: mu * mu, ..Moments::centred(0.0) };
        let t = leaky_relu(input, 0.0);
        let (mut m1, mut m2, mut p) = (0.0, 0.0, 0.0);
        // Midpoint rule over z > 0 only, where the integrands are smooth.
        let steps = 200_000;
        let hi = mu + 12.0 * sigma;
        let dz = hi / steps as f64;
        for i in 0..steps {
            let z = (i as f64 + 0.5) * dz;
            let density = standard_normal_pdf((z - mu) / sigma) / sigma * dz;
            m1 += z * density;
            m2 += z * z * density;
            p += density;
        }
        assert!((t.output.mean - m1).abs() < 1e-6);
        assert!((t.output.second - m2).abs() < 1e-6);
        assert!((t.backward_gain - p).abs() < 1e-6);
    }

    #[test]
    fn avg_pool_of_centred_input_follows_appendix_b() {
        let input = Moments::centred(2.0);
        let t = avg_pool(input, 2);
        assert!((t.output.second - 0.5).abs() < 1e-12);
        assert!((t.backward_gain - 1.0 / 16.0).abs() < 1e-12);
        // k^2 fewer entries, forward / k^2, backward / k^4: scaling preserved.
        assert!((scaling_ratio(&input, 64, &t, 16) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn avg_pool_after_relu_keeps_the_mean_and_raises_the_scaling_factor() {
        let input = leaky_relu(Moments::centred(1.0), 0.0).output;
        let t = avg_pool(input, 2);
        let expected = 0.5 * ((1.0 - 1.0 / PI) / 4.0 + 1.0 / PI);
        assert!((t.output.second - expected).abs() < 1e-12);
        assert!((scaling_ratio(&input, 64, &t, 16) - (1.0 + 3.0 / PI)).abs() < 1e-12);
    }

    /// After a conv of post-ReLU input, channel offsets carry the input's mean share: pooling then
    /// keeps 1/pi of the second moment, and a ReLU of offset channels keeps more than 1/pi.
    #[test]
    fn channel_offsets_follow_a_conv_of_post_relu_input_and_survive_pooling() {
        let relu_out = leaky_relu(Moments::centred(1.0), 0.0).output;
        assert!((relu_out.coherent - relu_out.mean * relu_out.mean).abs() < 1e-9);
        let geometry = WeightGeometry { fan_in: 8, fan_out: 8, kernel: 3, area_in: 64, area_out: 64, coverage: 1.0 };
        let conv_out = weight_layer(relu_out, &geometry, 2.0 / (9.0 * 8.0)).output;
        assert!((conv_out.coherent / conv_out.second - 1.0 / PI).abs() < 1e-9);
        let pooled = avg_pool(conv_out, 2).output;
        let expected = conv_out.second * ((1.0 - 1.0 / PI) / 4.0 + 1.0 / PI);
        assert!((pooled.second - expected).abs() < 1e-9);
        let relu_again = leaky_relu(conv_out, 0.0).output;
        assert!(relu_again.coherent > relu_again.mean * relu_again.mean);
        assert!(relu_again.coherent < relu_again.second);
    }

    /// A conv whose rows sum to zero, fed post-ReLU input (mean^2 = E[x^2]/pi, no other offset):
    /// by brute force over a row `w - mean(w)` of 72 i.i.d. entries and inputs `mean + e`, the
    /// output's second moment is `n E[W^2] (E[x^2] - mean^2)` and the offset is gone.
    #[test]
    fn centred_rows_see_the_input_without_its_common_mean() {
        let relu_out = leaky_relu(Moments::centred(1.0), 0.0).output;
        let seen = relu_out.without_common_mean();
        assert!((seen.second - (0.5 - 1.0 / (2.0 * PI))).abs() < 1e-12);
        assert!(seen.coherent.abs() < 1e-9 && seen.mean == 0.0 && !seen.nonnegative);
        // Exact for a fixed input: sum_i (w_i - w̄) (m + e_i) = sum_i (w_i - w̄) e_i.
        let (m, row) = (0.7, [0.3, -1.2, 0.5, 0.9, -0.1, 0.4]);
        let mean = row.iter().sum::<f64>() / row.len() as f64;
        let e = [0.2, -0.5, 1.1, 0.0, -0.3, 0.6];
        let with_offset: f64 = row.iter().zip(&e).map(|(w, e)| (w - mean) * (m + e)).sum();
        let without: f64 = row.iter().zip(&e).map(|(w, e)| (w - mean) * e).sum();
        assert!((with_offset - without).abs() < 1e-12);
    }

    /// Rows of `N` Gaussian entries spread their channels' variances by `2/N`; a ReLU turns the
    /// spread into channel offsets `Var(s)/2 pi` for the channels' scales `s`. With a log-normal
    /// variance of mean 1 and relative variance `D = 0.1` (`sigma^2 = ln 1.1`), `E[s] =
    /// exp(-sigma^2/8)` and `Var(s) = 1 - exp(-sigma^2/4)`: offsets 0.0037475 and the mean
    /// `exp(-sigma^2/8)/sqrt(2 pi)`.
    #[test]
    fn channel_scales_that_differ_become_offsets_after_a_relu() {
        assert!((row_dispersion(0.0, 27) - 2.0 / 27.0).abs() < 1e-15);
        assert!((row_dispersion(0.5, 10) - 0.3).abs() < 1e-15);
        let input = Moments { dispersion: 0.1, ..Moments::centred(1.0) };
        let out = leaky_relu(input, 0.0).output;
        let log_variance = 1.1f64.ln();
        let offsets = (1.0 - (-log_variance / 4.0).exp()) / (2.0 * PI);
        assert!((out.coherent - out.mean * out.mean - offsets).abs() < 1e-6, "{}", out.coherent - out.mean * out.mean);
        assert!((out.mean - (-log_variance / 8.0).exp() / (2.0 * PI).sqrt()).abs() < 1e-6);
        assert!((out.second - 0.5).abs() < 1e-9, "the second moment is linear in the variance");
        // Without dispersion, only the common mean: 1/(2 pi).
        assert!((leaky_relu(Moments::centred(1.0), 0.0).output.coherent - 1.0 / (2.0 * PI)).abs() < 1e-12);
    }

    #[test]
    fn coverage_counts_taps_inside_the_input() {
        assert_eq!(coverage_1d(32, 5, 1, 0, 28), 1.0);
        // 32 outputs of 5 taps; the two outputs at each border lose 2 and 1 taps.
        assert!((coverage_1d(32, 5, 1, 2, 32) - 154.0 / 160.0).abs() < 1e-12);
        assert_eq!(coverage_1d(8, 2, 2, 0, 4), 1.0);
    }

    #[test]
    fn weight_layer_preserves_the_scaling_factor_even_with_padding() {
        let input = Moments { second: 0.3, mean: 0.2, coherent: 0.05, nonnegative: true, ..Moments::centred(0.0) };
        let geometry = WeightGeometry { fan_in: 6, fan_out: 16, kernel: 5, area_in: 256, area_out: 256, coverage: 0.9 };
        let t = weight_layer(input, &geometry, 0.01);
        assert!((scaling_ratio(&input, 6 * 256, &t, 16 * 256) - 1.0).abs() < 1e-12);
        assert_eq!(t.output.mean, 0.0);
    }
}
