//! The networks the diagnostics are shown on, each at several widths and inits (every
//! `network!` is its own type, so each variant is declared): the paper's strided LeNet (Fig. 1,
//! Fig. 2; max-pooling replaced by 2x2 convolutions of stride 2, as Table 1 requires) and its
//! section 9 MLP.

#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use scalenet::diagnostics::{gauss_newton, measure, seeded_normal, Diagnosis, GaussNewton};
use scalenet::{network, Network};

/// The strided LeNet with conv widths `c1`, `c2` and hidden widths `f1`, `f2`; further options
/// (`init`, `fixed_scalars`) follow.
macro_rules! strided_lenet {
    ($(#[$doc:meta])* $name:ident, $c1:tt, $c2:tt, $f1:tt, $f2:tt $(, $option:ident : $value:tt)*) => {
        network! {
            $(#[$doc])*
            pub struct $name {
                input: [3, 32, 32],
                typical_kernel: 5,
                $($option: $value,)*
                conv1: conv($c1, kernel = 5, padding = 2),
                relu,
                down1: conv($c1, kernel = 2, stride = 2),
                relu,
                conv2: conv($c2, kernel = 5),
                relu,
                down2: conv($c2, kernel = 2, stride = 2),
                relu,
                flatten,
                fc1: linear($f1),
                relu,
                fc2: linear($f2),
                relu,
                fc3: linear(10),
            }
        }
    };
}

strided_lenet!(
    /// The strided LeNet at the usual widths, geometric init.
    StridedLeNet, 6, 16, 120, 84
);
strided_lenet!(StridedLeNetHalf, 3, 8, 60, 42);
strided_lenet!(StridedLeNetDouble, 12, 32, 240, 168);
strided_lenet!(StridedLeNetQuadruple, 24, 64, 480, 336);
strided_lenet!(StridedLeNetFanIn, 6, 16, 120, 84, init: fan_in, fixed_scalars: false);
strided_lenet!(StridedLeNetFanOut, 6, 16, 120, 84, init: fan_out, fixed_scalars: false);
strided_lenet!(StridedLeNetArithmetic, 6, 16, 120, 84, init: arithmetic, fixed_scalars: false);

network! {
    /// The LeNet with 2x2 average pooling (the limit the diagnostics show: see the README).
    pub struct PooledLeNet {
        input: [3, 32, 32],
        typical_kernel: 5,
        conv1: conv(6, kernel = 5, padding = 2),
        relu,
        avg_pool(2),
        conv2: conv(16, kernel = 5),
        relu,
        avg_pool(2),
        flatten,
        fc1: linear(120),
        relu,
        fc2: linear(84),
        relu,
        fc3: linear(10),
    }
}

/// The section 9 MLP `784 - h1 - h2 - 10`.
macro_rules! mlp {
    ($(#[$doc:meta])* $name:ident, $h1:tt, $h2:tt $(, $option:ident : $value:tt)*) => {
        network! {
            $(#[$doc])*
            pub struct $name {
                input: [784],
                $($option: $value,)*
                fc1: linear($h1),
                relu,
                fc2: linear($h2),
                relu,
                fc3: linear(10),
            }
        }
    };
}

mlp!(
    /// The paper's LIBSVM network (section 9), geometric init.
    Mlp, 384, 64
);
mlp!(Mlp16, 96, 16);
mlp!(Mlp32, 192, 32);
mlp!(Mlp128, 768, 128);
mlp!(Mlp256, 1536, 256);
mlp!(MlpFanIn, 384, 64, init: fan_in, fixed_scalars: false);
mlp!(MlpFanOut, 384, 64, init: fan_out, fixed_scalars: false);
mlp!(MlpArithmetic, 384, 64, init: arithmetic, fixed_scalars: false);

/// One declared network, measured by seed and batch size on i.i.d. standard normal input.
#[derive(Clone, Copy)]
pub struct Variant {
    pub label: &'static str,
    /// The width the coordinate check plots it at.
    pub width: usize,
    pub measure: fn(seed: u64, batch: usize) -> Result<Diagnosis>,
    pub gauss_newton: fn(seed: u64, batch: usize) -> Result<GaussNewton>,
}

impl Variant {
    pub fn of<N: Network>(label: &'static str, width: usize) -> Self {
        Variant { label, width, measure: measure_seeded::<N>, gauss_newton: gauss_newton_seeded::<N> }
    }
}

/// Standard normal input for `N`, drawn from `seed`.
pub fn random_input<N: Network>(batch: usize, seed: u64) -> Result<Tensor> {
    let mut dims = vec![batch];
    dims.extend(N::plan().input.dims());
    seeded_normal(&Tensor::zeros(dims, DType::F32, &Device::Cpu)?, seed)
}

fn measure_seeded<N: Network>(seed: u64, batch: usize) -> Result<Diagnosis> {
    let varmap = VarMap::new();
    let net = N::new_seeded(&varmap, DType::F32, &Device::Cpu, seed)?;
    measure(&net, &varmap, &random_input::<N>(batch, 1_000_000 + seed)?, 2_000_000 + seed)
}

fn gauss_newton_seeded<N: Network>(seed: u64, batch: usize) -> Result<GaussNewton> {
    let varmap = VarMap::new();
    let net = N::new_seeded(&varmap, DType::F32, &Device::Cpu, seed)?;
    gauss_newton(&net, &varmap, &random_input::<N>(batch, 1_000_000 + seed)?, 3_000_000 + seed)
}

/// The strided LeNet at four widths (labelled by conv1's channels; every layer scales alike).
pub fn lenet_widths() -> Vec<Variant> {
    vec![
        Variant::of::<StridedLeNetHalf>("x0.5", 3),
        Variant::of::<StridedLeNet>("x1", 6),
        Variant::of::<StridedLeNetDouble>("x2", 12),
        Variant::of::<StridedLeNetQuadruple>("x4", 24),
    ]
}

/// The strided LeNet under the four inits of Fig. 2.
pub fn lenet_inits() -> Vec<Variant> {
    vec![
        Variant::of::<StridedLeNet>("geometric", 6),
        Variant::of::<StridedLeNetFanIn>("fan_in", 6),
        Variant::of::<StridedLeNetFanOut>("fan_out", 6),
        Variant::of::<StridedLeNetArithmetic>("arithmetic", 6),
    ]
}

/// The MLP at five widths (labelled by the second hidden layer; the first is 6 times wider).
pub fn mlp_widths() -> Vec<Variant> {
    vec![
        Variant::of::<Mlp16>("16", 16),
        Variant::of::<Mlp32>("32", 32),
        Variant::of::<Mlp>("64", 64),
        Variant::of::<Mlp128>("128", 128),
        Variant::of::<Mlp256>("256", 256),
    ]
}

/// The MLP under the four inits of Fig. 2.
pub fn mlp_inits() -> Vec<Variant> {
    vec![
        Variant::of::<Mlp>("geometric", 64),
        Variant::of::<MlpFanIn>("fan_in", 64),
        Variant::of::<MlpFanOut>("fan_out", 64),
        Variant::of::<MlpArithmetic>("arithmetic", 64),
    ]
}
