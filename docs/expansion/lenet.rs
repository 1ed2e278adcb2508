// What `network!` writes for the `lenet` declaration of scalenet-codegen/src/tests.rs, as
// prettyplease prints it. Regenerate: SCALENET_BLESS=1 cargo test -p scalenet-codegen

/// Strided LeNet for 3x32x32 images (max-pooling replaced by average pooling).
/**

# Scaling calculus

```text
init geometric, k* = 5, c = 0.4000, input [3, 32, 32] -> output [10], predicted output std 1.000 (target 1.000)
layer  op                                                                                           output           E[W²]     c_l    E[x²]    E[dx²]      ς      γ      κ  γ_bias  κ_bias
input                                                                                               [3, 32, 32]                       1.000
·      fixed ×0.5569 (input balances weights and biases §8.1, correlated positions, image borders)  [3, 32, 32]                      0.3101  0.001708  1.627
conv1  conv 3→6 k5 p2                                                                               [6, 32, 32]    0.01929  0.4093   0.4158  6.022e-4  1.538  10.17  1.047   10.17   6.858
·      relu                                                                                         [6, 32, 32]                      0.2079  0.001204  1.538
·      avg_pool 2                                                                                   [6, 16, 16]                      0.1016   0.01927  3.007
·      fixed ×0.9325 (correlated positions, image borders, average pooling §8, zero padding)        [6, 16, 16]                     0.08835   0.02216  3.007
conv2  conv 6→16 k5                                                                                 [16, 12, 12]   0.01778  0.8710   0.2493  0.005539  3.182  10.17  2.426   10.17   3.179
·      relu                                                                                         [16, 12, 12]                     0.1247   0.01108  3.182
·      avg_pool 2                                                                                   [16, 6, 6]                      0.09795    0.1772  10.00
·      fixed ×0.6522 (kernel 1 ≠ typical kernel 5 §6.2, average pooling §8)                         [16, 6, 6]                      0.04167    0.4167  10.00
·      flatten                                                                                      [576]                           0.04167    0.4167  10.00
fc1    linear 576→120                                                                               [120]         0.003771  0.9915  0.09051    0.9207  10.00  10.17  1.000   10.17   1.000
·      relu                                                                                         [120]                           0.04526     1.841  10.00
·      fixed ×1.420 (kernel 1 ≠ typical kernel 5 §6.2)                                              [120]                           0.09129    0.9129  10.00
fc2    linear 120→84                                                                                [84]          0.009876  0.9915   0.1082     1.100  10.00  10.17  1.000   10.17   1.000
·      relu                                                                                         [84]                            0.05409     2.201  10.00
·      fixed ×1.420 (kernel 1 ≠ typical kernel 5 §6.2)                                              [84]                             0.1091     1.091  10.00
fc3    linear 84→10                                                                                 [10]           0.03421  0.9915   0.3136     3.189  10.00  10.17  1.000   10.17   1.000
·      fixed ×1.786 (output std target §7)                                                          [10]                              1.000     1.000  10.00
note: correlations between positions (average pooling, channel offsets, image borders) make these gradients larger than the paper's independent-positions model says, by more than 1.5x (κ): conv1 bias ×6.858, conv2 ×2.426 bias ×3.179; the plan compensates them (in c_l and the fixed scalars), so every γ is still equal at initialization; nothing to do unless training is unstable there, and then `centred_weights: true` removes the part the channel offsets cause
columns: layer = the prefix of the step's parameters (`conv1.weight`; unnamed layers are `<kind>_<position in the declaration>`), · for a step without; op = what the step does, `fixed ×f (why)` being a multiplier the calculus inserts; output = per-sample shape
  E[W²] = the variance the weights are drawn with; c_l = its numerator, E[W²] = c_l/(k √(n_in n_out)) with n the channel or feature counts, for geometric init (eq. 3): the header's c = 2/k* (§6.2), rescaled where the scaling factor or the corrections differ from the first layer's, which is why c_l may be far from c
  E[x²], E[dx²] = second moments of the step's output and of the gradient reaching it, for centred unit-variance input and E[dy²] = 1 at the output
  ς = the activation scaling factor n ρ² E[dx²] E[x²] (eq. 1, §4); ReLU, average pooling and fixed scalars keep it (Table 1)
  γ = the weight-to-gradient ratio E[dW²]/E[W²] (Theorem 1), with the correlations between positions: equal γ is equal conditioning, the calculus's goal; κ = that γ over the γ of independent positions (1: no correction)
  γ_bias, κ_bias = the same for the layer's bias (eq. 7)
```*/
pub struct LeNet {
    pub conv1: ::scalenet::nn::Conv2d,
    pub conv2: ::scalenet::nn::Conv2d,
    pub fc1: ::scalenet::nn::Linear,
    pub fc2: ::scalenet::nn::Linear,
    pub fc3: ::scalenet::nn::Linear,
    /// Output calibration (section 7), 1 until [`Self::calibrate_output`] sets it; kept in the
    /// `VarMap` as `output_calibration` so it is saved and loaded with the weights, and
    /// applied detached so no optimizer trains it.
    pub output_calibration: ::scalenet::candle_core::Tensor,
}
#[allow(clippy::approx_constant, clippy::let_unit_value)]
const _: () = {
    use ::scalenet::__private as sn;
    /// Fixed scalar inserted by the calculus: input balances weights and biases §8.1, correlated positions, image borders.
    const FIXED_0: f64 = 0.5569095294558095;
    /// Fixed scalar inserted by the calculus: correlated positions, image borders, average pooling §8, zero padding.
    const FIXED_1: f64 = 0.9325316804805637;
    /// Fixed scalar inserted by the calculus: kernel 1 ≠ typical kernel 5 §6.2, average pooling §8.
    const FIXED_2: f64 = 0.6522222721718944;
    /// Fixed scalar inserted by the calculus: kernel 1 ≠ typical kernel 5 §6.2.
    const FIXED_3: f64 = 1.4202377101540702;
    /// Fixed scalar inserted by the calculus: kernel 1 ≠ typical kernel 5 §6.2.
    const FIXED_4: f64 = 1.42023771015407;
    /// Fixed scalar inserted by the calculus: output std target §7.
    const FIXED_5: f64 = 1.785854374844071;
    impl LeNet {
        /// Per-sample input shape, `[C, H, W]` or `[D]`.
        pub const INPUT_SHAPE: [usize; 3] = [3, 32, 32];
        /// Per-sample output shape.
        pub const OUTPUT_SHAPE: [usize; 1] = [10];
        /// The fingerprint of the plan this code was generated from, computed at compile time:
        /// `Self::plan().fingerprint()` must equal it (the tests check every fixture).
        #[doc(hidden)]
        pub const PLAN_FINGERPRINT: u64 = 3462039206131173466u64;
        /// Creates the parameters through `vb` (`<layer>.weight`, `<layer>.bias`, candle-nn layout),
        /// drawn with the variances the calculus chose; biases start at zero. With a `VarMap`
        /// backend the draws come from candle's RNG, which cannot be seeded on CPU: use
        /// [`Self::new_seeded`] for reproducible runs, or load trained weights through `vb`.
        pub fn new(vb: sn::VarBuilder) -> sn::Result<Self> {
            ::core::result::Result::Ok(Self {
                conv1: sn::conv2d(
                    vb.pp("conv1"),
                    3,
                    6,
                    5,
                    1,
                    2,
                    true,
                    0.1389037098607076,
                )?,
                conv2: sn::conv2d(
                    vb.pp("conv2"),
                    6,
                    16,
                    5,
                    1,
                    0,
                    true,
                    0.13334209412513665,
                )?,
                fc1: sn::linear(vb.pp("fc1"), 576, 120, true, 0.06141196950747096)?,
                fc2: sn::linear(vb.pp("fc2"), 120, 84, true, 0.09937767339848105)?,
                fc3: sn::linear(vb.pp("fc3"), 84, 10, true, 0.18496269150177586)?,
                output_calibration: vb
                    .get_with_hints((), "output_calibration", sn::Init::Const(1.0))?,
            })
        }
        /// Creates the parameters in `varmap`, drawn from a `rand` generator seeded with `seed`
        /// and the parameter's name: the same seed gives the same values on every device.
        pub fn new_seeded(
            varmap: &sn::VarMap,
            dtype: sn::DType,
            device: &sn::Device,
            seed: u64,
        ) -> sn::Result<Self> {
            Self::new(sn::seeded_var_builder(varmap, seed, dtype, device))
        }
        /// The declaration, as the calculus reads it.
        pub fn spec() -> sn::calculus::NetworkSpec {
            use ::core::option::Option::{None, Some};
            use sn::calculus::registry::ArgValue::{Count, Flag, Number};
            use sn::spec_layer as layer;
            let mut spec = sn::calculus::NetworkSpec::new(sn::calculus::Shape::Image {
                    channels: 3,
                    height: 32,
                    width: 32,
                })
                .with_init_law(
                    sn::calculus::NetworkSpec::parse_init("geometric")
                        .expect("a known init"),
                )
                .with_output_std(1.0)
                .with_fixed_scalars(true)
                .with_branch_scaling(true)
                .with_spatial_coherence(true)
                .with_centred_weights(false)
                .with_varying_output_std(false)
                .with_precision(None);
            spec.typical_kernel = Some(5);
            spec.layers = ::std::vec::Vec::from([
                layer(
                    Some("conv1"),
                    "conv",
                    &[
                        Some(Count(6)),
                        Some(Count(5)),
                        Some(Count(1)),
                        Some(Count(2)),
                        Some(Flag(true)),
                        Some(Count(1)),
                    ],
                    None,
                    false,
                ),
                layer(None, "relu", &[], None, false),
                layer(None, "avg_pool", &[Some(Count(2)), Some(Count(2))], None, false),
                layer(
                    Some("conv2"),
                    "conv",
                    &[
                        Some(Count(16)),
                        Some(Count(5)),
                        Some(Count(1)),
                        Some(Count(0)),
                        Some(Flag(true)),
                        Some(Count(1)),
                    ],
                    None,
                    false,
                ),
                layer(None, "relu", &[], None, false),
                layer(None, "avg_pool", &[Some(Count(2)), Some(Count(2))], None, false),
                layer(None, "flatten", &[], None, false),
                layer(
                    Some("fc1"),
                    "linear",
                    &[Some(Count(120)), Some(Flag(true))],
                    None,
                    false,
                ),
                layer(None, "relu", &[], None, false),
                layer(
                    Some("fc2"),
                    "linear",
                    &[Some(Count(84)), Some(Flag(true))],
                    None,
                    false,
                ),
                layer(None, "relu", &[], None, false),
                layer(
                    Some("fc3"),
                    "linear",
                    &[Some(Count(10)), Some(Flag(true))],
                    None,
                    false,
                ),
            ]);
            spec.assign_layer_ids();
            spec
        }
        /// The calculus's plan: every op, init variance, fixed scalar and predicted moment.
        pub fn plan() -> &'static sn::calculus::Plan {
            static PLAN: ::std::sync::OnceLock<sn::calculus::Plan> = ::std::sync::OnceLock::new();
            PLAN.get_or_init(|| {
                sn::calculus::analyze(&Self::spec())
                    .expect("network! checked this declaration at compile time")
            })
        }
        /// The plan as a table (`Display`), the same one as in this struct's documentation.
        pub fn report() -> sn::Report {
            sn::Report::new("LeNet", Self::plan())
        }
        /// The output of every top-level step of [`Self::plan`] (`plan().steps`, fixed scalars and
        /// whole residual blocks included), in order: for measuring what the calculus predicts.
        pub fn forward_steps(
            &self,
            xs: &sn::Tensor,
            train: bool,
        ) -> sn::Result<::std::vec::Vec<sn::Tensor>> {
            let mut trace = ::std::vec::Vec::new();
            let mut record = |_: usize, xs: sn::Tensor| {
                trace.push(xs.clone());
                ::core::result::Result::Ok(xs)
            };
            self.forward_hooked(xs, train, ::core::option::Option::Some(&mut record))?;
            ::core::result::Result::Ok(trace)
        }
        /// The forward pass with `hook(step, output)` called after every top-level step of
        /// `plan().steps`; what it returns continues the pass (add a zero probe variable there
        /// to read `dL/dx` of that activation, which candle's `GradStore` does not keep).
        pub fn forward_hooked(
            &self,
            xs: &sn::Tensor,
            train: bool,
            hook: ::core::option::Option<sn::StepHook<'_>>,
        ) -> sn::Result<sn::Tensor> {
            let _ = train;
            sn::check_input(
                xs,
                &Self::INPUT_SHAPE,
                self.output_calibration.dtype(),
                "LeNet",
            )?;
            let mut hook = sn::Hook::new(hook);
            let xs = xs.clone();
            #[allow(unused_mut)]
            let mut pending: f64 = 1.0;
            let xs = hook.after(0, sn::defer(xs, FIXED_0, &mut pending), &mut pending)?;
            let xs = hook
                .after(
                    1,
                    self.conv1.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook.after(2, sn::ops::relu(&xs)?, &mut pending)?;
            let xs = hook.after(3, sn::ops::avg_pool(&xs, 2, 2)?, &mut pending)?;
            let xs = hook.after(4, sn::defer(xs, FIXED_1, &mut pending), &mut pending)?;
            let xs = hook
                .after(
                    5,
                    self.conv2.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook.after(6, sn::ops::relu(&xs)?, &mut pending)?;
            let xs = hook.after(7, sn::ops::avg_pool(&xs, 2, 2)?, &mut pending)?;
            let xs = hook.after(8, sn::defer(xs, FIXED_2, &mut pending), &mut pending)?;
            let xs = hook.after(9, sn::ops::flatten(&xs)?, &mut pending)?;
            let xs = hook
                .after(
                    10,
                    self.fc1.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook.after(11, sn::ops::relu(&xs)?, &mut pending)?;
            let xs = hook.after(12, sn::defer(xs, FIXED_3, &mut pending), &mut pending)?;
            let xs = hook
                .after(
                    13,
                    self.fc2.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook.after(14, sn::ops::relu(&xs)?, &mut pending)?;
            let xs = hook.after(15, sn::defer(xs, FIXED_4, &mut pending), &mut pending)?;
            let xs = hook
                .after(
                    16,
                    self.fc3.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook.after(17, sn::defer(xs, FIXED_5, &mut pending), &mut pending)?;
            sn::calibrated(&xs, &self.output_calibration, pending)
        }
        /// Sets the output calibration so that the output standard deviation on `xs` (evaluation
        /// mode) is `target_std` (`Self::plan().output_std` keeps the plan's; the paper's experiments
        /// use 0.05), as section 7 and the paper's experiments do after one batch. `varmap` must
        /// hold this network's variables. Returns the new factor.
        pub fn calibrate_output(
            &self,
            varmap: &sn::VarMap,
            xs: &sn::Tensor,
            target_std: f64,
        ) -> sn::Result<f64> {
            sn::calibrate(
                varmap,
                &self.output_calibration,
                &self.forward_hooked(xs, false, ::core::option::Option::None)?,
                target_std,
            )
        }
    }
    impl sn::Module for LeNet {
        /// `[batch, ...INPUT_SHAPE] -> [batch, ...OUTPUT_SHAPE]`.
        fn forward(&self, xs: &sn::Tensor) -> sn::Result<sn::Tensor> {
            self.forward_hooked(xs, false, ::core::option::Option::None)
        }
    }
    impl sn::Network for LeNet {
        const NAME: &'static str = "LeNet";
        fn plan() -> &'static sn::calculus::Plan {
            Self::plan()
        }
        fn new_seeded(
            varmap: &sn::VarMap,
            dtype: sn::DType,
            device: &sn::Device,
            seed: u64,
        ) -> sn::Result<Self> {
            Self::new_seeded(varmap, dtype, device, seed)
        }
        fn forward_hooked(
            &self,
            xs: &sn::Tensor,
            train: bool,
            hook: ::core::option::Option<sn::StepHook<'_>>,
        ) -> sn::Result<sn::Tensor> {
            Self::forward_hooked(self, xs, train, hook)
        }
    }
};
