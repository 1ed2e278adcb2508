//! The exact linear pieces of a generated network of one input on an interval.
//!
//! A ReLU network of a scalar input is piecewise linear. [`linear_regions`] walks its breakpoints
//! from the left end: at a point it evaluates the network and, alongside, its derivative (a second
//! batch row carries `f(x) + f'(x)`, with every ReLU applied to it with the mask of the first row,
//! so both rows stay on the same linear piece), reads every ReLU pre-activation `z + z' t`, and jumps
//! to the nearest zero crossing ahead. Nothing is sampled: every breakpoint is found, however close
//! to its neighbours (to the floating-point precision of the network's dtype: use f64).

use crate::calculus::{Op, StepOp};
use crate::Network;
use candle_core::{DType, Tensor};

/// Why the pieces of a network cannot be counted.
#[derive(Debug, thiserror::Error)]
pub enum RegionsError {
    #[error("{network} takes input {input:?}; linear_regions needs a network of one input, `input: [1]`")]
    /// The network does not take one input.
    NotOneInput {
        /// The network, by name.
        network: &'static str,
        /// Its input shape.
        input: Vec<usize>,
    },
    #[error("{network}: step {step} (`{op}`) is not piecewise linear or hides its activations in a block; linear_regions follows sequential networks of linear layers, `relu`, `leaky_relu`, scalars, biases and fixed scalars")]
    /// A step is not piecewise linear or hides its activations.
    Unsupported {
        /// The network, by name.
        network: &'static str,
        /// The top-level step at fault, as in `plan().steps`.
        step: usize,
        /// The step's op.
        op: String,
    },
    #[error("the interval [{0}, {1}] is empty or not finite")]
    /// The interval `[start, end]` is empty or not finite.
    Interval(f64, f64),
    #[error("{network}: more than {limit} activation regions on the interval; count a smaller one")]
    /// More regions than the limit.
    TooMany {
        /// The network, by name.
        network: &'static str,
        /// The limit.
        limit: usize,
    },
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
}

/// The linear pieces of a network on an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearPieces {
    /// Interior breakpoints where the slope changes, in increasing order.
    pub breakpoints: Vec<f64>,
    /// The slope of each piece (`breakpoints.len() + 1` of them).
    pub slopes: Vec<f64>,
    /// Activation regions: intervals of constant ReLU pattern. At least the number of pieces; more
    /// where a pattern changes without changing the slope (a unit that no later layer reads).
    pub activation_regions: usize,
}

impl LinearPieces {
    /// The number of linear pieces.
    pub fn count(&self) -> usize {
        self.slopes.len()
    }
}

/// At most this many activation regions are walked.
pub const MAX_REGIONS: usize = 1 << 20;

/// The exact linear pieces of `net` on `[lo, hi]` (evaluation mode: dropout is off).
///
/// ```
/// use scalenet::candle_core::{DType, Device};
/// use scalenet::candle_nn::VarMap;
/// use scalenet::network;
/// use scalenet::regions::linear_regions;
///
/// network! { pub struct Tiny { input: [1], fixed_scalars: false, fc1: linear(8), relu, fc2: linear(1) } }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = Tiny::new_seeded(&VarMap::new(), DType::F64, &Device::Cpu, 0)?;
/// let pieces = linear_regions(&net, (-3.0, 3.0))?;
/// assert!(pieces.count() <= 9); // one hidden layer of 8 units: at most 8 kinks
/// # Ok(())
/// # }
/// ```
pub fn linear_regions<N: Network>(net: &N, (lo, hi): (f64, f64)) -> Result<LinearPieces, RegionsError> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(RegionsError::Interval(lo, hi));
    }
    let plan = N::plan();
    if plan.input.numel() != 1 {
        return Err(RegionsError::NotOneInput { network: N::NAME, input: plan.input.dims() });
    }
    // The negative slope of each top-level step that is an activation; every other step must be affine.
    let mut slopes_of_steps = Vec::with_capacity(plan.steps.len());
    for (index, step) in plan.steps.iter().enumerate() {
        let slope = match &step.op {
            StepOp::Declared { op: Op::Relu, .. } => Some(0.0),
            StepOp::Declared { op: Op::LeakyRelu { slope }, .. } => Some(*slope),
            StepOp::Declared {
                op: Op::Linear { .. } | Op::Scalar | Op::Bias | Op::Scale { .. } | Op::Flatten | Op::Dropout { .. },
                ..
            }
            | StepOp::FixedScale { .. } => None,
            _ => {
                let op = step.op_keyword().unwrap_or("block").to_string();
                return Err(RegionsError::Unsupported { network: N::NAME, step: index, op });
            }
        };
        slopes_of_steps.push(slope);
    }
    let dtype = net_dtype::<N>(net)?;
    let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
    let scale = lo.abs().max(hi.abs()).max(1.0);

    let mut x = lo;
    let mut pieces = LinearPieces { breakpoints: Vec::new(), slopes: Vec::new(), activation_regions: 0 };
    loop {
        let (slope, step) = walk(net, &slopes_of_steps, x, dtype, tolerance * scale)?;
        pieces.activation_regions += 1;
        if pieces.activation_regions > MAX_REGIONS {
            return Err(RegionsError::TooMany { network: N::NAME, limit: MAX_REGIONS });
        }
        let same_slope = pieces
            .slopes
            .last()
            .is_some_and(|&last| (last - slope).abs() <= 1e3 * tolerance * last.abs().max(slope.abs()).max(1e-300));
        if same_slope {
            // The pattern changed but not the slope: not a breakpoint of the function.
        } else {
            if !pieces.slopes.is_empty() {
                pieces.breakpoints.push(x);
            }
            pieces.slopes.push(slope);
        }
        // A crossing within rounding of the right end is the end itself (a triangle's zero at 1).
        match step {
            Some(t) if x + t < hi - 1e3 * tolerance * scale => x += t,
            _ => break,
        }
    }
    Ok(pieces)
}

fn net_dtype<N: Network>(net: &N) -> candle_core::Result<DType> {
    // One forward pass at 0 tells the network's dtype, whatever its parameters are.
    for dtype in [DType::F64, DType::F32, DType::BF16, DType::F16] {
        let probe = Tensor::zeros((1, 1), dtype, &candle_core::Device::Cpu)?;
        if net.forward_hooked(&probe, false, None).is_ok() {
            return Ok(dtype);
        }
    }
    candle_core::bail!("{}: no floating-point dtype runs this network", N::NAME)
}

/// The slope of the piece starting at `x` (to its right), and the distance to the next
/// breakpoint candidate (`None`: no unit crosses zero to the right).
fn walk<N: Network>(
    net: &N,
    activation_slopes: &[Option<f64>],
    x: f64,
    dtype: DType,
    tolerance: f64,
) -> Result<(f64, Option<f64>), RegionsError> {
    let device = candle_core::Device::Cpu;
    // Row 0 is f at x, row 1 is f(x) + f'(x): the tangent, on the piece to the right of x.
    let xs = Tensor::new(&[[x], [x + 1.0]], &device)?.to_dtype(dtype)?;
    let mut input = xs.clone();
    let mut nearest: Option<f64> = None;
    let mut hook = |step: usize, output: Tensor| -> candle_core::Result<Tensor> {
        let result = match activation_slopes.get(step).copied().flatten() {
            Some(negative_slope) => {
                let pre = input.to_dtype(DType::F64)?.flatten_from(1)?.to_vec2::<f64>()?;
                let (value, tangent): (Vec<f64>, Vec<f64>) =
                    pre[0].iter().zip(&pre[1]).map(|(&z, &z1)| (z, z1 - z)).unzip();
                let mut row0 = Vec::with_capacity(value.len());
                let mut row1 = Vec::with_capacity(value.len());
                for (&z, &dz) in value.iter().zip(&tangent) {
                    // A unit at zero (within rounding) takes the side its slope goes to.
                    let at_zero = z.abs() <= tolerance * dz.abs().max(1.0);
                    let active = if at_zero { dz > 0.0 } else { z > 0.0 };
                    let gain = if active { 1.0 } else { negative_slope };
                    let z_here = if at_zero { 0.0 } else { z };
                    row0.push(gain * z_here);
                    row1.push(gain * (z_here + dz));
                    if dz != 0.0 && !at_zero {
                        let t = -z / dz;
                        if t > tolerance {
                            nearest = Some(nearest.map_or(t, |n: f64| n.min(t)));
                        }
                    }
                }
                let shape = output.shape().clone();
                let mut rows = row0;
                rows.extend(row1);
                Tensor::new(rows, output.device())?.to_dtype(output.dtype())?.reshape(shape)?
            }
            None => output,
        };
        input = result.clone();
        Ok(result)
    };
    let ys = net.forward_hooked(&xs, false, Some(&mut hook))?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    // Row 1 starts at `outputs`; with several outputs a piece ends where any of them bends, and the
    // slope reported is the first output's.
    let outputs = ys.len() / 2;
    Ok((ys[outputs] - ys[0], nearest))
}
