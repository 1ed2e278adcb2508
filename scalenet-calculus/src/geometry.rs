//! The geometry of a window sliding over one axis: whether it fits its input exactly and the
//! output size (shape inference and the kinds' shape rules ask), and which taps of which outputs
//! land inside the padded input, counted in closed form (the correlation tables of
//! [`crate::coherence`] and the centred rows' border offsets ask).

use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::spec::{LayerId, Shape};

/// Why a window does not fit its input.
pub(crate) enum WindowError {
    KernelTooLarge { padded: usize },
    NotIntegral { padded: usize },
}

/// Output size of a window of `kernel` sliding by `stride` over `size` padded by `padding`.
pub(crate) fn conv_window(size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize, WindowError> {
    let padded = size + 2 * padding;
    if kernel > padded {
        return Err(WindowError::KernelTooLarge { padded });
    }
    if !(padded - kernel).is_multiple_of(stride) {
        return Err(WindowError::NotIntegral { padded });
    }
    Ok((padded - kernel) / stride + 1)
}

impl WindowError {
    /// The diagnostic of a convolution whose window does not fit an input of `size`, with the
    /// padding or size that would.
    pub(crate) fn report(
        self,
        id: LayerId,
        kernel: usize,
        stride: usize,
        padding: usize,
        size: usize,
        diagnostics: &mut Diagnostics,
    ) {
        match self {
            WindowError::KernelTooLarge { padded } => diagnostics.push(Rule::ExactWindow,
                Location::layer(id, LayerField::Kernel),
                format!(
                    "the {kernel}x{kernel} kernel is larger than its padded input ({padded} = {size} + 2 x {padding}); use a kernel of at most {padded} or `padding = {}`",
                    (kernel - size).div_ceil(2)
                ),
            ),
            WindowError::NotIntegral { padded } => {
                // The smallest extra padding that makes the windows tile, if a small one does: the
                // search is bounded so that no size a user writes makes it long.
                let padding_fix = (1..=kernel.min(64)).find(|extra| (padded + 2 * extra - kernel).is_multiple_of(stride));
                let hint = match padding_fix {
                    Some(extra) => format!("use `padding = {}`", padding + extra),
                    None => format!("pick an input size that {stride} divides"),
                };
                let dropped = match (padded - kernel) % stride {
                    1 => "the last row".to_string(),
                    rows => format!("the last {rows} rows"),
                };
                diagnostics.push(Rule::ExactWindow,
                    Location::layer(id, LayerField::Stride),
                    format!(
                        "the output size ({padded} - {kernel}) / {stride} + 1 is not an integer, so {dropped} would be dropped; {hint}"
                    ),
                )
            }
        }
    }
}

/// A convolution's window along one axis (a linear layer is `1, 1, 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The kernel size.
    pub kernel: usize,
    /// The stride.
    pub stride: usize,
    /// The zero padding on each side.
    pub padding: usize,
}

impl Window {
    /// The window of a linear layer: every input is its own position.
    pub const LINEAR: Window = Window { kernel: 1, stride: 1, padding: 0 };

    /// What zero padding leaves of a common input mean `m` through rows centred over their
    /// `N = n_in k^2` entries: at output `p` the taps inside the input, `q(p)` of the `k^2` per
    /// channel, sum to `m sum_{inside} W`, a fixed pattern with
    /// `E[o(p)^2] = m^2 s^2 n_in q (k^2 - q) / k^2` (a subset of `a` of the `N` centred entries
    /// sums to variance `s^2 a (N - a) / N`, `s^2` the variance drawn). Its spatial mean is
    /// `m sum_t W_t a_t` over taps `t` inside at a share `a_t` of the outputs, of second moment
    /// `m^2 s^2 n_in (sum_t a_t^2 - (sum_t a_t)^2 / k^2)`. Returns the two factors of
    /// `m^2 s^2 n_in`: `(second, coherent)`; both are zero without padding.
    pub fn centred_border_offsets(&self, input_shape: Shape) -> (f64, f64) {
        let (in_h, in_w) = extent(input_shape);
        let taps = (self.kernel * self.kernel) as f64;
        let ([q_r, q2_r, share_r, share2_r], [q_c, q2_c, share_c, share2_c]) =
            (self.border_axis_sums(in_h), self.border_axis_sums(in_w));
        let second = q_r * q_c - q2_r * q2_c / taps;
        let coherent = share2_r * share2_c - (share_r * share_c).powi(2) / taps;
        (second.max(0.0), coherent.max(0.0))
    }

    /// Along one axis of `input` positions: the mean over outputs of `q` and of `q^2` (`q` the taps
    /// of an output inside the input), and `sum_a share(a)`, `sum_a share(a)^2` (`share(a)` the
    /// outputs whose tap `a` is inside, as a fraction). Without a pass over the outputs (a map may
    /// be millions wide): `q = k` but within `padding + kernel` of an end, and each tap's outputs
    /// inside are an interval.
    pub(crate) fn border_axis_sums(&self, input: usize) -> [f64; 4] {
        let output = (input + 2 * self.padding - self.kernel) / self.stride + 1;
        let k = self.kernel as i64;
        let counts: Vec<i64> = (0..self.kernel).map(|a| self.outputs_inside(a, input, output).1 as i64).collect();
        let n = output as isize;
        let reach = ((self.padding + self.kernel) as isize).min(n);
        let q_squared_excess: i64 = (0..reach)
            .chain((n - reach).max(reach)..n)
            .map(|o| {
                let q = (0..self.kernel).filter(|&a| self.source(o, a as isize, input).is_some()).count() as i64;
                q * q - k * k
            })
            .sum();
        let share: Vec<f64> = counts.iter().map(|&c| c as f64 / output as f64).collect();
        let n = output as f64;
        [
            counts.iter().sum::<i64>() as f64 / n,
            (k * k * output as i64 + q_squared_excess) as f64 / n,
            share.iter().sum::<f64>(),
            share.iter().map(|s| s * s).sum::<f64>(),
        ]
    }

    /// The (output, input) pairs of the taps whose source is inside an input of `input`
    /// positions, output by output.
    pub(crate) fn inside_pairs(self, input: usize, output: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..output).flat_map(move |o| {
            (0..self.kernel).filter_map(move |a| {
                (o * self.stride + a).checked_sub(self.padding).filter(|&i| i < input).map(|i| (o, i))
            })
        })
    }

    /// The input position of output `o` through tap `a`, if it is not padding.
    pub(crate) fn source(&self, o: isize, a: isize, input: usize) -> Option<isize> {
        let i = o * self.stride as isize + a - self.padding as isize;
        (0..input as isize).contains(&i).then_some(i)
    }

    /// The outputs whose source through tap `a` is inside an input of `input` positions: an
    /// interval of `0..output`, as `(first, count)`.
    pub(crate) fn outputs_inside(&self, a: usize, input: usize, output: usize) -> (isize, isize) {
        let (s, p, a) = (self.stride as isize, self.padding as isize, a as isize);
        // o s + a - p in [0, input): o >= (p - a) / s rounded up, o <= (input - 1 + p - a) / s rounded down.
        let first = (p - a).div_euclid(s) + isize::from((p - a).rem_euclid(s) != 0);
        let last = (input as isize - 1 + p - a).div_euclid(s);
        let (first, last) = (first.max(0), last.min(output as isize - 1));
        (first, (last - first + 1).max(0))
    }

    /// The (output, tap) pairs `(o, a)` whose partner output `o + shift` exists and whose sources
    /// through tap `a`, from `o` and from `o + shift`, are both inside the input. For each tap the
    /// outputs inside form an interval, and the pairs at `shift` within it are its length less
    /// `|shift|`: `O(kernel)`, not a count over the outputs.
    pub(crate) fn same_tap_pairs(&self, shift: isize, input: usize, output: usize) -> usize {
        (0..self.kernel).map(|a| (self.outputs_inside(a, input, output).1 - shift.abs()).max(0) as usize).sum()
    }

    /// For every input offset `d` (from `-(input - 1)`), the output offsets `o' - o` of the
    /// (output, tap) pairs `(o, a)` and `(o', a')`, any taps, whose sources are `i` and `i + d`,
    /// both inside the input, with how many there are of each.
    pub(crate) fn all_tap_pairs(&self, input: usize, output: usize) -> Vec<Vec<(isize, f64)>> {
        let (n_in, k) = (input as isize, self.kernel as isize);
        let sources: Vec<(isize, isize)> = (0..output as isize)
            .flat_map(|o| (0..k).filter_map(move |a| self.source(o, a, input).map(|i| (o, i))))
            .collect();
        let mut counts: Vec<Vec<(isize, f64)>> = vec![Vec::new(); (2 * n_in - 1) as usize];
        for &(o, i) in &sources {
            for &(o2, i2) in &sources {
                let list = &mut counts[(i2 - i + n_in - 1) as usize];
                match list.iter_mut().find(|(shift, _)| *shift == o2 - o) {
                    Some((_, c)) => *c += 1.0,
                    None => list.push((o2 - o, 1.0)),
                }
            }
        }
        counts
    }

    /// For every input offset `d` (from `-(input - 1)`), the number of (output pair, tap) triples
    /// `(o, o + d / s, a)` whose sources are `i` and `i + d`, both inside the input.
    pub(crate) fn input_pairs(&self, input: usize, output: usize) -> Vec<f64> {
        let (n_in, s) = (input as isize, self.stride as isize);
        (1 - n_in..n_in)
            .map(|d| if d % s == 0 { self.same_tap_pairs(d / s, input, output) as f64 } else { 0.0 })
            .collect()
    }

    /// For every output offset `d` (from `-(output - 1)`), `sum_o q(o) q(o + d) / k^2` for the
    /// count `q(o)` of taps of output `o` inside the input: one axis of `Q(d) / k^4`. `q` is `k`
    /// but for the few outputs the padding reaches, so with `q = k + e` the sum is `k^2` per pair
    /// plus sums over those few (exact in integers, `O(kernel^2)` per offset).
    pub(crate) fn tap_count_products(&self, input: usize, output: usize) -> Vec<f64> {
        let k = self.kernel as i64;
        let inside =
            |o: isize| (0..self.kernel).filter(|&a| self.source(o, a as isize, input).is_some()).count() as i64;
        let n = output as isize;
        // The outputs whose count differs from k, with the difference: only those within
        // `padding + kernel` of an end can have a tap in the padding.
        let reach = ((self.padding + self.kernel) as isize).min(n);
        let border: Vec<(isize, i64)> =
            (0..reach).chain((n - reach).max(reach)..n).map(|o| (o, inside(o) - k)).filter(|&(_, e)| e != 0).collect();
        let excess = |o: isize| border.iter().find(|&&(b, _)| b == o).map_or(0, |&(_, e)| e);
        let k2 = (self.kernel * self.kernel) as f64;
        (1 - n..n)
            .map(|d| {
                // Outputs o with o and o + d both in 0..n.
                let range = (-d).max(0)..n.min(n - d);
                let pairs = range.end - range.start;
                let own: i64 = border.iter().filter(|(o, _)| range.contains(o)).map(|&(_, e)| e).sum();
                let partner: i64 = border.iter().filter(|(o, _)| range.contains(&(o - d))).map(|&(_, e)| e).sum();
                let both: i64 = border.iter().filter(|(o, _)| range.contains(o)).map(|&(o, e)| e * excess(o + d)).sum();
                (k * k * pairs as i64 + k * (own + partner) + both) as f64 / k2
            })
            .collect()
    }

    /// For every output offset `d` (from `-(output - 1)`), the output pairs `(o, o + d)` whose
    /// sources through one tap are both inside the input, averaged over the taps.
    pub(crate) fn tap_pairs(&self, input: usize, output: usize) -> Vec<f64> {
        let n_out = output as isize;
        (1 - n_out..n_out).map(|d| self.same_tap_pairs(d, input, output) as f64 / self.kernel as f64).collect()
    }
}

/// For every input offset `d` of a pooling with windows of `kernel` along an axis of `input`
/// positions: the window offsets of the pairs `(i, i + d)` with how many pairs have each, in the
/// order the pairs meet them as `i` grows. With `d = q k + r`, the pair's windows are `q + 1`
/// apart when `i mod k >= k - r` and `q` apart otherwise, so each offset's count is a count of
/// residues: `O(1)` per offset.
pub(crate) fn window_offsets(input: usize, kernel: usize) -> Vec<Vec<(isize, f64)>> {
    let (n, k) = (input as isize, kernel as isize);
    // How many i in 0..x have i mod k >= t.
    let at_least = |x: isize, t: isize| x.div_euclid(k) * (k - t) + (x.rem_euclid(k) - t).max(0);
    (1 - n..n)
        .map(|d| {
            let (q, r) = (d.div_euclid(k), d.rem_euclid(k));
            let (start, end) = ((-d).max(0), n.min(n - d));
            let far = if r == 0 { 0 } else { at_least(end, k - r) - at_least(start, k - r) };
            let near = end - start - far;
            let first_is_far = r != 0 && start.rem_euclid(k) >= k - r;
            let (first, second) = if first_is_far { ((q + 1, far), (q, near)) } else { ((q, near), (q + 1, far)) };
            [first, second].into_iter().filter(|&(_, count)| count > 0).map(|(o, count)| (o, count as f64)).collect()
        })
        .collect()
}

/// `(height, width)` of a map; `(1, 1)` for a vector.
pub(crate) fn extent(shape: Shape) -> (usize, usize) {
    match shape {
        Shape::Image { height, width, .. } => (height, width),
        Shape::Vector { .. } => (1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-axis counts in closed form count what loops over every output, tap and position
    /// count (the loops this module used before): every window that fits maps up to 13 wide.
    #[test]
    fn axis_counts_in_closed_form_match_counting() {
        let brute_same_tap = |w: &Window, shift: isize, input: usize, output: usize| {
            let n_out = output as isize;
            (0..w.kernel as isize)
                .flat_map(|a| (0..n_out).map(move |o| (a, o)))
                .filter(|&(a, o)| {
                    (0..n_out).contains(&(o + shift))
                        && w.source(o, a, input).is_some()
                        && w.source(o + shift, a, input).is_some()
                })
                .count()
        };
        let brute_products = |w: &Window, input: usize, output: usize| -> Vec<f64> {
            let q: Vec<f64> = (0..output)
                .map(|o| (0..w.kernel).filter(|&a| w.source(o as isize, a as isize, input).is_some()).count() as f64)
                .collect();
            let n = output as isize;
            (1 - n..n)
                .map(|d| {
                    (0..n)
                        .filter(|o| (0..n).contains(&(o + d)))
                        .map(|o| q[o as usize] * q[(o + d) as usize])
                        .sum::<f64>()
                        / (w.kernel * w.kernel) as f64
                })
                .collect()
        };
        let brute_windows = |input: usize, kernel: usize| -> Vec<Vec<(isize, f64)>> {
            let (n, k) = (input as isize, kernel as isize);
            (1 - n..n)
                .map(|d| {
                    let mut counts: Vec<(isize, f64)> = Vec::new();
                    for i in (0..n).filter(|i| (0..n).contains(&(i + d))) {
                        let offset = (i + d).div_euclid(k) - i.div_euclid(k);
                        match counts.iter_mut().find(|(o, _)| *o == offset) {
                            Some((_, c)) => *c += 1.0,
                            None => counts.push((offset, 1.0)),
                        }
                    }
                    counts
                })
                .collect()
        };
        // `Window::border_axis_sums` as a pass over every output.
        let brute_border_sums = |w: &Window, input: usize| {
            let output = (input + 2 * w.padding - w.kernel) / w.stride + 1;
            let inside = |o: usize, a: usize| w.source(o as isize, a as isize, input).is_some();
            let q: Vec<f64> = (0..output).map(|o| (0..w.kernel).filter(|&a| inside(o, a)).count() as f64).collect();
            let share: Vec<f64> =
                (0..w.kernel).map(|a| (0..output).filter(|&o| inside(o, a)).count() as f64 / output as f64).collect();
            let n = output as f64;
            [
                q.iter().sum::<f64>() / n,
                q.iter().map(|q| q * q).sum::<f64>() / n,
                share.iter().sum::<f64>(),
                share.iter().map(|s| s * s).sum::<f64>(),
            ]
        };
        let mut checked = 0;
        for input in 1..14 {
            for kernel in 1..6 {
                assert_eq!(window_offsets(input, kernel), brute_windows(input, kernel), "pool {kernel} on {input}");
                for stride in 1..4 {
                    for padding in 0..4 {
                        let padded = input + 2 * padding;
                        if kernel > padded || (padded - kernel) % stride != 0 {
                            continue;
                        }
                        let output = (padded - kernel) / stride + 1;
                        let w = Window { kernel, stride, padding };
                        for shift in -(output as isize) - 1..=output as isize + 1 {
                            assert_eq!(
                                w.same_tap_pairs(shift, input, output),
                                brute_same_tap(&w, shift, input, output),
                                "{w:?} on {input}, shift {shift}"
                            );
                        }
                        assert_eq!(w.tap_count_products(input, output), brute_products(&w, input, output), "{w:?}");
                        assert_eq!(w.border_axis_sums(input), brute_border_sums(&w, input), "{w:?} on {input}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 300, "{checked}");
    }

    /// A 3x3 conv with padding 1 on a 4x4 map: per axis 2, 3, 3, 2 taps inside, so the outputs
    /// see 4 (corners), 6 (edges) or 9 taps; `mean q (9 - q) / 9` is `(4·20 + 8·18 + 0)/(9·16)`. Tap
    /// shares 3/4, 1, 3/4 per axis: `sum a^2 = (17/8)^2`, `(sum a)^2 / 9 = (5/2)^4 / 9`. Without
    /// padding nothing is left.
    #[test]
    fn centred_rows_leave_offsets_only_at_padded_borders() {
        let shape = Shape::Image { channels: 1, height: 4, width: 4 };
        let (second, coherent) = Window { kernel: 3, stride: 1, padding: 1 }.centred_border_offsets(shape);
        assert!((second - (4.0 * 20.0 + 8.0 * 18.0) / (9.0 * 16.0)).abs() < 1e-12, "{second}");
        assert!((coherent - ((17.0f64 / 8.0).powi(2) - 2.5f64.powi(4) / 9.0)).abs() < 1e-12, "{coherent}");
        let unpadded = Shape::Image { channels: 1, height: 6, width: 6 };
        assert_eq!(Window { kernel: 3, stride: 1, padding: 0 }.centred_border_offsets(unpadded), (0.0, 0.0));
        assert_eq!(Window { kernel: 2, stride: 2, padding: 0 }.centred_border_offsets(unpadded), (0.0, 0.0));
    }
}
