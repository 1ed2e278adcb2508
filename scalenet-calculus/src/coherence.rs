//! Spatial coherence of the backward signal: where assumption 2 of the paper (positions
//! independent) fails, and by how much.
//!
//! The calculus predicts a weight's gradient from `E[dW^2] = rho_out^2 E[x^2] E[dy^2]`: one term
//! per output position. Written out, a convolution weight's gradient is a sum over positions,
//! `dW = sum_p x(p + t) dy(p)`, so
//!
//! ```text
//! E[dW^2] = sum_{p, p'} E[x(p + t) x(p' + t)] E[dy(p) dy(p')]
//! ```
//!
//! and the cross terms `p != p'` vanish only if one of the two factors does. Forward, they do not:
//! a ReLU's output has `mean^2 = E[x^2]/pi`, and the channel offsets that [`crate::moments`]
//! carries make every pair of positions of a channel correlated by `coherent / second`. Backward,
//! they vanish for a gradient that comes out of a linear layer, but average pooling copies one
//! gradient over each window, and a global average pool over the whole image: then `dy` is
//! correlated over windows, and `E[dW^2]` gains the product of the two correlations. The bias
//! gradient, `sum_p dy(p)`, gains the whole backward correlation.
//!
//! This module carries, for the gradient at every step, its covariance between positions of one
//! channel by offset, `K(d) = E[dy(p) dy(p + d)]` averaged over the pairs `(p, p + d)` the map
//! holds ([`Covariance`]), from the output back to the input. With weights drawn independently of
//! each other and of everything before and after them (the calculus's setting), every rule is
//! exact in expectation over the weights:
//!
//! - **Convolution** (`dx(i) = sum_{o, a} W_a dy(o)` over `o s + a - pad = i`): the weights of two
//!   different taps are uncorrelated, so only pairs through the *same* tap survive, and
//!   `K_dx(d) = n_out E[W^2] count(d) / pairs_in(d) K_dy(d / s)`, where `count(d)` counts the
//!   (output, tap) pairs that reach both `i` and `i + d` and `pairs_in(d)` the input pairs at offset
//!   `d`; offsets that are not multiples of the stride get nothing. The padding's missing taps are
//!   in `count`, so borders come out as [`crate::moments::coverage_1d`] has them.
//! - **Average pooling** (`dx(i) = dy(i / k) / k^2`): `K_dx(d)` averages `K_dy` at the window offset
//!   of each pair, `/ k^4`: pairs in one window get the full `K_dy(0)`.
//! - **Global average pooling**: every position gets `dy / (H W)`, so `K_dx(d) = E[dy^2] / (H W)^2`.
//! - **Flatten** after a linear layer: the entries of the vector gradient are uncorrelated (the
//!   linear layer's weights are), so the image gradient is white.
//! - **ReLU** (`dx = m dy`, `m = 1[z > 0]`, or `a` below zero for a leaky ReLU): the mask is
//!   independent of the gradient, so `K_dx(d) = K_dy(d) E[m(p) m(p + d)]`. At `d = 0` that is
//!   `P(z > 0)`, the calculus's halving. At `d != 0` both masks share their channel's random offset
//!   and are independent given it: `E[m m'] = E_c[P(z > 0 | c)^2] >= P(z > 0)^2`, with the channel
//!   offsets of [`crate::moments`].
//! - **Residual sums**: the two branches' gradients are uncorrelated (zero-mean weights in a
//!   branch), so `K = alpha^2 K_shortcut + beta^2 K_main`.
//!
//! The correction of a weight's gamma is then the ratio of `E[dW^2]` with the cross terms to
//! without them: [`Covariance::weight_coherence`]; of a bias's, [`Covariance::bias_coherence`].
//! Forward, the covariance of `x` between two distinct positions of a channel is its channel
//! offset part, `coherent`, which [`crate::moments`] already predicts.

pub use crate::geometry::Window;
use crate::geometry::{extent, window_offsets};
use crate::moments::Moments;
use crate::spec::Shape;

/// The most offsets a [`Covariance`] holds, `(2 H - 1) (2 W - 1)` for an `H x W` map: 128 MiB of
/// `f64` (a 2048 x 2048 map fits). The planner models the correlations between positions and the
/// borders only for networks whose maps all fit ([`fits`]), so no declaration inside the size
/// limits makes it allocate more; see [`crate::Plan::positions_modelled`].
pub const MAX_OFFSETS: usize = 1 << 24;

/// The number of offsets of a [`Covariance`] on `shape`, if it is at most [`MAX_OFFSETS`].
pub fn offsets_on(shape: Shape) -> Option<usize> {
    let (height, width) = extent(shape);
    (2 * height - 1).checked_mul(2 * width - 1).filter(|&n| n <= MAX_OFFSETS)
}

/// Whether the covariance tables of a map of `shape` fit in [`MAX_OFFSETS`].
pub fn fits(shape: Shape) -> bool {
    offsets_on(shape).is_some()
}

/// The covariance `K(d) = E[g(p) g(p + d)]` of a gradient between two positions of one channel, by
/// offset `d = (dh, dw)`, averaged over the pairs of positions at that offset. A vector is a
/// `1 x 1` map: `K(0)` is its second moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Covariance {
    height: usize,
    width: usize,
    /// `(2 height - 1) x (2 width - 1)`, offsets from `-(height - 1)` up, row-major.
    values: Vec<f64>,
}

impl Covariance {
    /// Uncorrelated positions with second moment `second`: the gradient at the network output, or
    /// out of a linear layer.
    pub fn white(shape: Shape, second: f64) -> Self {
        let (height, width) = extent(shape);
        Covariance::from_fn(height, width, |dh, dw| if (dh, dw) == (0, 0) { second } else { 0.0 })
    }

    fn from_fn(height: usize, width: usize, f: impl Fn(isize, isize) -> f64) -> Self {
        let (h, w) = (height as isize, width as isize);
        let values = (1 - h..h).flat_map(|dh| (1 - w..w).map(move |dw| (dh, dw))).map(|(dh, dw)| f(dh, dw)).collect();
        Covariance { height, width, values }
    }

    /// `K(dh, dw)`; 0 at offsets the map does not hold.
    pub fn at(&self, dh: isize, dw: isize) -> f64 {
        let (h, w) = (self.height as isize, self.width as isize);
        if dh.abs() >= h || dw.abs() >= w {
            return 0.0;
        }
        self.values[((dh + h - 1) * (2 * w - 1) + dw + w - 1) as usize]
    }

    /// `E[g^2]`.
    pub fn second(&self) -> f64 {
        self.at(0, 0)
    }

    /// The covariance of `factor * g`.
    pub fn scaled(&self, factor: f64) -> Self {
        Covariance { values: self.values.iter().map(|v| v * factor * factor).collect(), ..self.clone() }
    }

    /// The covariance of the sum of two uncorrelated gradients on the same map.
    pub fn plus(&self, other: &Covariance) -> Self {
        debug_assert_eq!((self.height, self.width), (other.height, other.width));
        Covariance { values: self.values.iter().zip(&other.values).map(|(a, b)| a + b).collect(), ..self.clone() }
    }

    /// Offsets with their number of position pairs `(H - |dh|)(W - |dw|)`.
    fn offsets(&self) -> impl Iterator<Item = (isize, isize, f64)> + '_ {
        let (h, w) = (self.height as isize, self.width as isize);
        (1 - h..h)
            .flat_map(move |dh| (1 - w..w).map(move |dw| (dh, dw)))
            .map(move |(dh, dw)| (dh, dw, ((h - dh.abs()) * (w - dw.abs())) as f64))
    }

    /// `sum_{p, p'} E[g(p) g(p')] / (H W E[g^2])`: how much more a sum of `g` over the map varies
    /// than if its positions were independent. For a bias, whose gradient is that sum, it is the
    /// factor on eq. (7)'s bias scaling; 1 for white gradients.
    pub fn bias_coherence(&self) -> f64 {
        let second = self.second();
        if second <= 0.0 {
            return 1.0;
        }
        self.offsets().map(|(dh, dw, pairs)| pairs * self.at(dh, dw)).sum::<f64>() / (self.pairs(0, 0) * second)
    }

    /// `sum_{p, p'} K(p - p')` over the map's pairs of positions.
    pub fn sum_over_pairs(&self) -> f64 {
        self.offsets().map(|(dh, dw, pairs)| pairs * self.at(dh, dw)).sum()
    }

    /// The map's number of positions.
    pub fn area(&self) -> f64 {
        (self.height * self.width) as f64
    }

    fn pairs(&self, dh: isize, dw: isize) -> f64 {
        ((self.height as isize - dh.abs()) * (self.width as isize - dw.abs())) as f64
    }

    /// `E[dW^2]` with the cross terms over `E[dW^2]` without them, for a weight layer whose
    /// output gradient has this covariance and whose input has moments `input`; the weights of a
    /// convolution of `window` (1 for a linear layer).
    ///
    /// `E[dW^2] = sum_d C(d) K_x(s d) K(d)` over output offsets `d`, where `C(d)` counts the output
    /// pairs at offset `d` whose taps both land inside the input (averaged over taps) and
    /// `K_x = second` at 0, `coherent` elsewhere.
    ///
    /// `removed_mean` is the common input mean that centred rows (`centred_weights`) do not see
    /// (0 otherwise; `input` is then what they see). Where padding hides taps from some outputs,
    /// the mean still reaches the gradient: tap `t` collects `m S_t`, `S_t` the gradient summed
    /// over the outputs where `t` is inside, and centring removes only the taps' average `m S̄`,
    /// leaving `m^2 (avg_t E[S_t^2] - E[S̄^2])` per weight, where `avg_t E[S_t^2] = sum_d C(d) K(d)`
    /// and `E[S̄^2] = sum_d Q(d) K(d) / k^4` with `Q(d) = sum_p q(p) q(p + d)` over the outputs'
    /// counts `q` of taps inside.
    pub fn weight_coherence(&self, input: &Moments, removed_mean: f64, window: Window, input_shape: Shape) -> f64 {
        let second = self.second();
        if second <= 0.0 || input.second <= 0.0 || self.height * self.width == 1 {
            return 1.0;
        }
        let (in_h, in_w) = extent(input_shape);
        let rows = window.tap_pairs(in_h, self.height);
        let cols = window.tap_pairs(in_w, self.width);
        let at = |counts: &[f64], d: isize, n: usize| counts[(d + n as isize - 1) as usize];
        let mut cross = 0.0;
        for (dh, dw, _) in self.offsets() {
            cross += at(&rows, dh, self.height) * at(&cols, dw, self.width) * self.at(dh, dw);
        }
        let diagonal = at(&rows, 0, self.height) * at(&cols, 0, self.width) * second;
        // The within part's correlation at the input offsets the output offsets reach.
        let stride = window.stride as isize;
        let within = if input.correlation.is_white() {
            diagonal
        } else {
            self.offsets()
                .map(|(dh, dw, _)| {
                    let rho = input.correlation.at(stride * dh, stride * dw);
                    if rho == 0.0 {
                        return 0.0;
                    }
                    at(&rows, dh, self.height) * at(&cols, dw, self.width) * rho * self.at(dh, dw)
                })
                .sum()
        };
        let offset_fraction = (input.coherent / input.second).clamp(0.0, 1.0);
        // sum_d C K_x K = coherent sum_d C K + (second - coherent) sum_d C rho K, over second C(0) K(0).
        let mut kappa = offset_fraction * cross / diagonal + (1.0 - offset_fraction) * within / diagonal;
        if removed_mean != 0.0 {
            let rows = window.tap_count_products(in_h, self.height);
            let cols = window.tap_count_products(in_w, self.width);
            let mut averaged = 0.0;
            for (dh, dw, _) in self.offsets() {
                averaged += at(&rows, dh, self.height) * at(&cols, dw, self.width) * self.at(dh, dw);
            }
            kappa += removed_mean * removed_mean * (cross - averaged).max(0.0) / (input.second * diagonal);
        }
        kappa
    }

    /// `sum_{p, p'} E[x(p) x(p')] E[g(p) g(p')]` over the same without cross terms, for a product
    /// of `x` and the gradient summed over every position of a channel: a learnable scalar's
    /// gradient.
    pub fn product_coherence(&self, input: &Moments) -> f64 {
        if input.second <= 0.0 || self.height * self.width == 1 {
            return 1.0;
        }
        let offset_fraction = (input.coherent / input.second).clamp(0.0, 1.0);
        let within = if input.correlation.is_white() {
            1.0
        } else {
            self.offsets().map(|(dh, dw, pairs)| pairs * self.at(dh, dw) * input.correlation.at(dh, dw)).sum::<f64>()
                / (self.pairs(0, 0) * self.second())
        };
        offset_fraction * self.bias_coherence() + (1.0 - offset_fraction) * within
    }

    /// Back through a weight layer: from the gradient at its output (this) to its input, of
    /// `input_shape`, for weights of second moment `weight_second_moment` and `fan_out` outputs,
    /// whose rows of `centred_row` entries sum to zero (`None`: i.i.d. rows).
    ///
    /// A centred row's entries are correlated, `E[W_a W_b] = s^2 (delta_ab - 1 / N)` with
    /// `s^2 = E[W^2] N / (N - 1)`, so pairs through *different* taps add
    /// `-(s^2 / N) n_out sum K(o' - o)` over every (output, tap) pair of `i` and of `i + d`
    /// (`T(d)` below): a gradient coherent over the map reaches the input through the sum of one
    /// input channel's taps, which the centring shrinks by `1 - 1 / n_in`.
    pub fn through_weight_layer(
        &self,
        window: Window,
        input_shape: Shape,
        fan_out: usize,
        weight_second_moment: f64,
        centred_row: Option<usize>,
    ) -> Covariance {
        let (in_h, in_w) = extent(input_shape);
        if (in_h, in_w) == (1, 1) {
            return Covariance::white(input_shape, fan_out as f64 * weight_second_moment * self.second());
        }
        let rows = window.input_pairs(in_h, self.height);
        let cols = window.input_pairs(in_w, self.width);
        let stride = window.stride as isize;
        let scale = fan_out as f64 * weight_second_moment;
        let centred = centred_row
            .filter(|&n| n > 1)
            .map(|n| (n as f64, window.all_tap_pairs(in_h, self.height), window.all_tap_pairs(in_w, self.width)));
        Covariance::from_fn(in_h, in_w, |dh, dw| {
            let pairs = ((in_h as isize - dh.abs()) * (in_w as isize - dw.abs())) as f64;
            let same_tap = if dh % stride != 0 || dw % stride != 0 {
                0.0
            } else {
                rows[(dh + in_h as isize - 1) as usize]
                    * cols[(dw + in_w as isize - 1) as usize]
                    * self.at(dh / stride, dw / stride)
            };
            let Some((n, row_pairs, col_pairs)) = &centred else {
                return scale * same_tap / pairs;
            };
            let mut all_taps = 0.0;
            for &(oh, ch) in &row_pairs[(dh + in_h as isize - 1) as usize] {
                for &(ow, cw) in &col_pairs[(dw + in_w as isize - 1) as usize] {
                    all_taps += ch * cw * self.at(oh, ow);
                }
            }
            scale * (same_tap * n - all_taps) / ((n - 1.0) * pairs)
        })
    }

    /// Back through `k x k` average pooling with stride `k` onto an input of `input_shape`.
    pub fn through_avg_pool(&self, kernel: usize, input_shape: Shape) -> Covariance {
        let (in_h, in_w) = extent(input_shape);
        let rows = window_offsets(in_h, kernel);
        let cols = window_offsets(in_w, kernel);
        let k4 = (kernel as f64).powi(4);
        Covariance::from_fn(in_h, in_w, |dh, dw| {
            let (row, col) = (&rows[(dh + in_h as isize - 1) as usize], &cols[(dw + in_w as isize - 1) as usize]);
            let mut sum = 0.0;
            for &(oh, nh) in row {
                for &(ow, nw) in col {
                    sum += nh * nw * self.at(oh, ow);
                }
            }
            sum / (((in_h as isize - dh.abs()) * (in_w as isize - dw.abs())) as f64 * k4)
        })
    }

    /// Back through a global average pool (this is a vector) onto an input of `input_shape`.
    pub fn through_global_avg_pool(&self, input_shape: Shape) -> Covariance {
        let (in_h, in_w) = extent(input_shape);
        let area = (in_h * in_w) as f64;
        let value = self.second() / (area * area);
        Covariance::from_fn(in_h, in_w, |_, _| value)
    }

    /// Back through an activation with gradient mask `m = 1[z > 0] + slope 1[z <= 0]`, whose
    /// input `z` has moments `input`.
    pub fn through_activation(&self, input: &Moments, slope: f64) -> Covariance {
        if input.nonnegative {
            return self.clone();
        }
        let (same, distinct, sensitivity) = mask_products(input, slope);
        Covariance::from_fn(self.height, self.width, |dh, dw| {
            let masks = if (dh, dw) == (0, 0) {
                same
            } else {
                distinct + sensitivity * input.correlation.at(dh, dw).clamp(-1.0, 1.0).asin()
            };
            self.at(dh, dw) * masks
        })
    }

    /// Back through an op that moves values between positions without mixing them (flatten of a
    /// vector gradient that a linear layer produced: its entries are uncorrelated).
    pub fn white_on(&self, input_shape: Shape) -> Covariance {
        Covariance::white(input_shape, self.second())
    }
}

/// `(E[m^2], E[m m'], c)` for the gradient mask `m` of an activation at one position and at
/// another position of the same channel. The channel's offset `o ~ N(mean, coherent - mean^2)`
/// and its scale (the dispersion of [`crate::moments`]) are shared; given them, positions vary
/// with variance `sigma^2 = second - coherent` times the scale, independently, or with the
/// correlation `rho` of [`crate::correlation`], which adds `c asin(rho)` to `E[m m']`:
/// `c = (1 - a)^2 E[phi(o / sigma)^2]`, the orthant probability's slope (exact at `o = 0`, where
/// `P(z > 0, z' > 0) = 1/4 + asin(rho) / 2 pi`).
fn mask_products(input: &Moments, slope: f64) -> (f64, f64, f64) {
    let between = (input.coherent - input.mean * input.mean).max(0.0).sqrt();
    let within = (input.second - input.coherent).max(0.0).sqrt();
    let (mut same, mut distinct, mut sensitivity) = (0.0, 0.0, 0.0);
    let scales: Vec<(f64, f64)> = if input.dispersion > 0.0 && within > 0.0 {
        crate::moments::scale_factors(input.dispersion).collect()
    } else {
        vec![(1.0, 1.0)]
    };
    let correlated = !input.correlation.is_white();
    for (scale, weight) in scales {
        let sigma = within * scale.sqrt();
        // At channel offset o: [E[m^2], E[m]^2, phi(o / sigma)^2].
        let channel = |offset: f64| {
            let p = if sigma > 0.0 {
                crate::moments::standard_normal_cdf(offset / sigma)
            } else if offset > 0.0 {
                1.0
            } else {
                0.0
            };
            let density_sq = if sigma > 0.0 && correlated {
                let x = offset / sigma;
                (-x * x).exp() / (2.0 * std::f64::consts::PI)
            } else {
                0.0
            };
            [p + slope * slope * (1.0 - p), (p + slope * (1.0 - p)).powi(2), density_sq]
        };
        let [a, b, c] = if between == 0.0 {
            channel(input.mean)
        } else {
            crate::moments::standard_normal_expectations(|g| channel(input.mean + between * g))
        };
        same += weight * a;
        distinct += weight * b;
        sensitivity += weight * c;
    }
    (same, distinct, (1.0 - slope).powi(2) * sensitivity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moments::{leaky_relu, weight_layer, WeightGeometry};

    fn image(size: usize) -> Shape {
        Shape::Image { channels: 1, height: size, width: size }
    }

    /// Back through centred rows, against the expectation written out over every pair of
    /// (output, tap) sources of two input positions, with `E[W_a W_b] = s^2 (delta_ab - 1/N)`:
    /// a 3x3 convolution with padding 1 on a 5x5 map, and a 2x2 one of stride 2 on 6x6.
    #[test]
    fn centred_rows_correlate_the_taps_of_the_backward_pass() {
        for (window, input) in
            [(Window { kernel: 3, stride: 1, padding: 1 }, 5), (Window { kernel: 2, stride: 2, padding: 0 }, 6)]
        {
            let output = (input + 2 * window.padding - window.kernel) / window.stride + 1;
            let dy = Covariance::from_fn(output, output, |dh, dw| {
                1.0 + 0.3 * dh as f64 - 0.1 * (dh * dw) as f64 + if (dh, dw) == (0, 0) { 2.0 } else { 0.0 }
            });
            let (n, fan_out, second_moment) = (36usize, 5usize, 0.02);
            let got = dy.through_weight_layer(window, image(input), fan_out, second_moment, Some(n));
            let s2 = second_moment * n as f64 / (n as f64 - 1.0);
            let k = window.kernel as isize;
            let sources = |i: (isize, isize)| -> Vec<((isize, isize), isize)> {
                let mut list = vec![];
                for oh in 0..output as isize {
                    for ow in 0..output as isize {
                        for ah in 0..k {
                            for aw in 0..k {
                                if window.source(oh, ah, input) == Some(i.0)
                                    && window.source(ow, aw, input) == Some(i.1)
                                {
                                    list.push(((oh, ow), ah * k + aw));
                                }
                            }
                        }
                    }
                }
                list
            };
            let m = input as isize;
            for (dh, dw) in [(0, 0), (1, 0), (1, 2), (2, -1), (0, 3)] {
                let (mut sum, mut pairs) = (0.0, 0.0);
                for ih in 0..m {
                    for iw in 0..m {
                        let other = (ih + dh, iw + dw);
                        if !(0..m).contains(&other.0) || !(0..m).contains(&other.1) {
                            continue;
                        }
                        pairs += 1.0;
                        for (o, a) in sources((ih, iw)) {
                            for (o2, a2) in sources(other) {
                                let w = s2 * (if a == a2 { 1.0 } else { 0.0 } - 1.0 / n as f64);
                                sum += fan_out as f64 * w * dy.at(o2.0 - o.0, o2.1 - o.1);
                            }
                        }
                    }
                }
                let expected = sum / pairs;
                assert!(
                    (got.at(dh, dw) - expected).abs() < 1e-12,
                    "{window:?} d ({dh}, {dw}): {} vs {expected}",
                    got.at(dh, dw)
                );
            }
        }
    }

    /// The table's `K(0)` follows the calculus's own backward second moments (Appendix B) through
    /// every op, padding and strides included: the coherence model only adds the cross terms.
    #[test]
    fn the_diagonal_is_the_calculus_backward_moment() {
        let dy = Covariance::white(image(8), 2.0);
        for (window, input) in [
            (Window { kernel: 3, stride: 1, padding: 1 }, 8),
            (Window { kernel: 5, stride: 1, padding: 0 }, 12),
            (Window { kernel: 2, stride: 2, padding: 0 }, 16),
        ] {
            let geometry = WeightGeometry {
                fan_in: 4,
                fan_out: 6,
                kernel: window.kernel,
                area_in: input * input,
                area_out: 64,
                coverage: crate::moments::coverage_1d(input, window.kernel, window.stride, window.padding, 8).powi(2),
            };
            let expected = weight_layer(Moments::centred(1.0), &geometry, 0.1).backward_gain * 2.0;
            let got = dy.through_weight_layer(window, image(input), 6, 0.1, None).second();
            assert!((got / expected - 1.0).abs() < 1e-12, "{window:?}: {got} vs {expected}");
        }
        let pooled = dy.through_avg_pool(2, image(16));
        assert!((pooled.second() - 2.0 / 16.0).abs() < 1e-12);
        let relu_input = Moments::centred(1.0);
        let masked = dy.through_activation(&relu_input, 0.0);
        assert!((masked.second() - 2.0 * leaky_relu(relu_input, 0.0).backward_gain).abs() < 1e-9);
    }

    /// A pool copies the gradient over its window: adjacent pairs share a window half the time
    /// along each axis, and offset 2 never does.
    #[test]
    fn pooling_makes_windows_coherent() {
        let k = Covariance::white(image(4), 1.0).through_avg_pool(2, image(8));
        let own = 1.0 / 16.0;
        assert!((k.at(0, 0) - own).abs() < 1e-15);
        // 14 pairs per row at offset 1 (8 rows of 7): half inside a window.
        assert!((k.at(0, 1) - own * 32.0 / 56.0).abs() < 1e-15);
        assert_eq!(k.at(0, 2), 0.0);
        // Bias: one pool window of 4 positions fully correlated.
        assert!((k.bias_coherence() - 4.0).abs() < 1e-12);
    }

    /// A ReLU of centred input with no channel offset keeps `P(z > 0)^2 = 1/4` of the cross terms
    /// against 1/2 on the diagonal; channel offsets raise it, up to 1/2 when the whole input is
    /// the offset.
    #[test]
    fn relu_masks_share_their_channel_offset() {
        let (same, distinct, _) = mask_products(&Moments::centred(1.0), 0.0);
        assert!((same - 0.5).abs() < 1e-9 && (distinct - 0.25).abs() < 1e-9);
        // Correlation rho between positions: P(both > 0) = 1/4 + asin(rho) / (2 pi).
        let rho: f64 = 0.65;
        let (_, distinct, _) = mask_products(
            &Moments { second: 1.0, mean: 0.0, coherent: rho, nonnegative: false, ..Moments::centred(0.0) },
            0.0,
        );
        let expected = 0.25 + rho.asin() / (2.0 * std::f64::consts::PI);
        assert!((distinct - expected).abs() < 1e-6, "{distinct} vs {expected}");
        // The same through the within part's correlation (centred rows), without offsets: the
        // orthant probability's slope is exactly 1 / 2 pi.
        let correlated = Moments {
            correlation: crate::correlation::SpatialCorrelation::WHITE.through_weights(3, 1, Some(9)).0,
            ..Moments::centred(1.0)
        };
        let (_, distinct, sensitivity) = mask_products(&correlated, 0.0);
        assert!((distinct - 0.25).abs() < 1e-9);
        assert!((sensitivity - 1.0 / (2.0 * std::f64::consts::PI)).abs() < 1e-9, "{sensitivity}");
    }

    /// White gradients or offset-free inputs leave the paper's `E[dW^2]` alone.
    #[test]
    fn no_cross_terms_without_both_correlations() {
        let white = Covariance::white(image(6), 1.0);
        let offset = Moments { second: 1.0, mean: 0.5, coherent: 0.4, nonnegative: true, ..Moments::centred(0.0) };
        let window = Window { kernel: 3, stride: 1, padding: 1 };
        assert!((white.weight_coherence(&offset, 0.0, window, image(6)) - 1.0).abs() < 1e-12);
        let pooled = Covariance::white(image(3), 1.0).through_avg_pool(2, image(6));
        assert!((pooled.weight_coherence(&Moments::centred(1.0), 0.0, window, image(6)) - 1.0).abs() < 1e-12);
        assert!(pooled.weight_coherence(&offset, 0.0, window, image(6)) > 1.5);
    }

    /// The weight correction counts pairs as a brute-force sum over positions does, on a small
    /// padded strided case with a made-up covariance.
    #[test]
    fn weight_coherence_matches_a_sum_over_positions() {
        let (n_in, window) = (6usize, Window { kernel: 3, stride: 1, padding: 1 });
        let n_out = 6usize;
        let k = Covariance::from_fn(n_out, n_out, |dh, dw| 1.0 / (1.0 + (dh * dh + 2 * dw * dw) as f64));
        let input = Moments { second: 1.0, mean: 0.3, coherent: 0.2, nonnegative: false, ..Moments::centred(0.0) };
        let (mut with, mut without) = (0.0, 0.0);
        let inside = |o: isize, a: isize| (0..n_in as isize).contains(&(o + a - 1));
        for a in 0..3 {
            for b in 0..3 {
                for (p, q) in (0..n_out as isize).flat_map(|p| (0..n_out as isize).map(move |q| (p, q))) {
                    if !(inside(p, a) && inside(q, b)) {
                        continue;
                    }
                    without += input.second * k.second();
                    for (r, s) in (0..n_out as isize).flat_map(|r| (0..n_out as isize).map(move |s| (r, s))) {
                        if inside(r, a) && inside(s, b) {
                            let x = if (p, q) == (r, s) { input.second } else { input.coherent };
                            with += x * k.at(r - p, s - q);
                        }
                    }
                }
            }
        }
        let got = k.weight_coherence(&input, 0.0, window, image(n_in));
        assert!((got - with / without).abs() < 1e-12, "{got} vs {}", with / without);
    }
}
