//! Image borders: where positions are not alike.
//!
//! The calculus treats every position of a map alike. Zero padding breaks that forward: a padded
//! convolution's outputs near the border sum fewer taps, so their second moment is lower
//! ([`crate::moments::coverage_1d`] accounts for the average). The next convolution without
//! padding then covers interior inputs with more windows than border ones (up to `k` per axis
//! against 1), so the mean over its windows of `E[x^2]` exceeds the map's mean. Backward, the
//! same unpadded convolution sends interior inputs more gradient, and a weight's gradient,
//! `sum_p x(p + t) dy(p)`, is then larger where both are large: `E[dW^2]` exceeds the product of
//! the means.
//!
//! We carry a *profile* per axis: the second moment at each row (and column) relative to the
//! map's mean, forward for activations and backward for gradients, assuming the two axes
//! separate (`E[x(i, j)^2] = E[x^2] r(i) c(j)`), which every op here keeps exactly except the
//! sums of residual blocks and the masks of activations (whose means follow the profile's square
//! root; we keep the second moment's profile for both). A weight layer then gets three factors
//! over the uniform-map values:
//!
//! - `forward`: the mean over its windows of the input's profile, `sum_{(o, a) inside} v(i)` over
//!   the number of such pairs, per axis: what multiplies `E[y^2]`;
//! - `backward`: `sum_{(o, a) inside} u(o)` over the same count, `u` the output gradient's
//!   profile: what multiplies `E[dx^2]`;
//! - `gradient`: `sum_{(o, a) inside} v(i) u(o)` over the count: what multiplies `E[dW^2]`.
//!
//! This module is the mathematics of one window; the pass that carries the profiles through a
//! built plan is `border_pass`, above the registry.

use crate::geometry::Window;
use crate::spec::Shape;

/// A weight layer's border factors over the values for a uniform map (1 without borders).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BorderFactors {
    /// Multiplies the output's second moment.
    pub forward: f64,
    /// Multiplies the input gradient's second moment.
    pub backward: f64,
    /// Multiplies the weight gradient's second moment.
    pub gradient: f64,
}

impl BorderFactors {
    /// No border effect: every factor 1.
    pub const NONE: BorderFactors = BorderFactors { forward: 1.0, backward: 1.0, gradient: 1.0 };

    /// Whether the borders change anything.
    pub fn matter(&self) -> bool {
        [self.forward, self.backward, self.gradient].iter().any(|x| (x - 1.0).abs() > 1e-9)
    }
}

/// Relative second moment along each axis of a map; both have mean 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Relative second moment of each row.
    pub rows: Vec<f64>,
    /// Relative second moment of each column.
    pub cols: Vec<f64>,
}

impl Profile {
    /// Every position alike; `None` for a vector.
    pub fn uniform(shape: Shape) -> Option<Profile> {
        match shape {
            Shape::Image { height, width, .. } => Some(Profile { rows: vec![1.0; height], cols: vec![1.0; width] }),
            Shape::Vector { .. } => None,
        }
    }

    /// `weight a + (1 - weight) b`, axis by axis.
    pub(crate) fn mix(a: &Profile, weight: f64, b: &Profile) -> Profile {
        let mix = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(x, y)| weight * x + (1.0 - weight) * y).collect();
        Profile { rows: mix(&a.rows, &b.rows), cols: mix(&a.cols, &b.cols) }
    }
}

pub(crate) fn normalized(values: Vec<f64>) -> Vec<f64> {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    if mean > 0.0 {
        values.into_iter().map(|v| v / mean).collect()
    } else {
        values
    }
}

/// The three factors along one axis, for input profile `v` and output gradient profile `u`.
fn axis_factors(window: Window, v: &[f64], u: &[f64]) -> BorderFactors {
    let (mut count, mut forward, mut backward, mut gradient) = (0.0, 0.0, 0.0, 0.0);
    for (o, i) in window.inside_pairs(v.len(), u.len()) {
        count += 1.0;
        forward += v[i];
        backward += u[o];
        gradient += v[i] * u[o];
    }
    if count == 0.0 {
        return BorderFactors::NONE;
    }
    BorderFactors { forward: forward / count, backward: backward / count, gradient: gradient / count }
}

/// A weight layer's factors from its input's profile and its output gradient's.
pub fn weight_factors(window: Window, input: &Profile, output_gradient: &Profile) -> BorderFactors {
    let rows = axis_factors(window, &input.rows, &output_gradient.rows);
    let cols = axis_factors(window, &input.cols, &output_gradient.cols);
    BorderFactors {
        forward: rows.forward * cols.forward,
        backward: rows.backward * cols.backward,
        gradient: rows.gradient * cols.gradient,
    }
}

/// The output profile of a weight layer's window.
pub(crate) fn window_forward(window: Window, input: &[f64], output: usize) -> Vec<f64> {
    let mut out = vec![0.0; output];
    for (o, i) in window.inside_pairs(input.len(), output) {
        out[o] += input[i];
    }
    out
}

/// The input gradient's profile through a weight layer's window.
pub(crate) fn window_backward(window: Window, output: &[f64], input: usize) -> Vec<f64> {
    let mut out = vec![0.0; input];
    for (o, i) in window.inside_pairs(input, output.len()) {
        out[i] += output[o];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A padded convolution of a uniform map: the forward factor is the coverage.
    #[test]
    fn uniform_input_gives_the_coverage() {
        let window = Window { kernel: 5, stride: 1, padding: 2 };
        let uniform = vec![1.0; 32];
        let f = axis_factors(window, &uniform, &uniform);
        assert!((f.forward - 1.0).abs() < 1e-12 && (f.gradient - 1.0).abs() < 1e-12);
        let out = normalized(window_forward(window, &uniform, 32));
        // Row 0 sums 3 taps of 5, the interior 5: relative 3 / mean.
        let mean = (2.0 * (3.0 + 4.0) + 28.0 * 5.0) / 32.0;
        assert!((out[0] - 3.0 / mean).abs() < 1e-12);
    }

    /// An unpadded convolution of a map that is low at its border weights the interior more, so
    /// its windows' mean exceeds the map's; its backward pass sends the interior more gradient.
    #[test]
    fn unpadded_windows_favour_the_interior() {
        let window = Window { kernel: 5, stride: 1, padding: 0 };
        let axis: Vec<f64> = (0..16).map(|i| if i == 0 || i == 15 { 0.5 } else { 1.0 }).collect();
        let input = Profile { rows: normalized(axis.clone()), cols: normalized(axis) };
        let uniform_out = Profile::uniform(Shape::Image { channels: 1, height: 12, width: 12 }).unwrap();
        let f = weight_factors(window, &input, &uniform_out);
        assert!(f.forward > 1.0 && f.gradient > 1.0);
        let back = normalized(window_backward(window, &uniform_out.rows, 16));
        assert!(back[0] < back[8]);
    }
}
