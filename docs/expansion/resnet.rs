// What `network!` writes for the `resnet` declaration of scalenet-codegen/src/tests.rs, as
// prettyplease prints it. Regenerate: SCALENET_BLESS=1 cargo test -p scalenet-codegen

/// A small pre-activation ResNet with a global-average-pool head.
/**

# Scaling calculus

```text
init geometric, k* = 3, c = 0.6667, input [3, 16, 16] -> output [10], predicted output std 1.000 (target 1.000)
layer        op                                                                                                                               output          E[W²]     c_l    E[x²]    E[dx²]        ς       γ      κ  γ_bias  κ_bias
input                                                                                                                                         [3, 16, 16]                      1.000
·            fixed ×1.008 (input balances weights and biases §8.1, correlated positions, image borders)                                       [3, 16, 16]                      1.016  4.468e-4   0.3485
stem         conv 3→16 k3 p1                                                                                                                  [16, 16, 16]  0.03323  0.6907   0.8369  1.003e-4   0.3438  0.7841  1.074  0.7841   25.56
res1         residual α=0.8660 β=0.5000, identity shortcut                                                                                    [16, 16, 16]                    0.8369  1.009e-4   0.3459
  main:
    ·        relu                                                                                                                             [16, 16, 16]                    0.4185  4.922e-5  0.08436
    ·        fixed ×0.5957 (correlated positions, image borders, zero padding, residual branch weight §11)                                    [16, 16, 16]                    0.1485  1.387e-4  0.08436
    conv_3   conv 16→16 k3 p1                                                                                                                 [16, 16, 16]  0.01706  0.8189   0.3440  5.963e-5  0.08401  0.7841  6.003  0.7841   17.67
    ·        relu                                                                                                                             [16, 16, 16]                    0.1720  1.193e-4  0.08401
    ·        fixed ×0.8573 (correlated positions, image borders, zero padding, residual branch weight §11)                                    [16, 16, 16]                    0.1264  1.623e-4  0.08401
    conv_5   conv 16→16 k3 p1                                                                                                                 [16, 16, 16]  0.02663   1.278   0.4610  4.580e-5  0.08648  0.7841  14.63  0.7841   30.83
    ·        fixed ×1.347 (branch end E[F²] = E[x²] §11)                                                                                      [16, 16, 16]                    0.8369  2.523e-5  0.08648
res2         residual α=0.8660 β=0.5000                                                                                                       [32, 8, 8]                      0.8369  2.033e-4   0.3485
  main:
    ·        relu                                                                                                                             [16, 16, 16]                    0.4185  4.931e-5  0.08451
    ·        fixed ×0.6735 (kernel 2 ≠ typical kernel 3 §6.2, correlated positions, image borders, zero padding, residual branch weight §11)  [16, 16, 16]                    0.1898  1.087e-4  0.08451
    conv_8   conv 16→32 k2 s2                                                                                                                 [32, 8, 8]    0.02143  0.9700   0.2604  1.585e-4  0.08451  0.7841  8.467  0.7841   20.13
    ·        relu                                                                                                                             [32, 8, 8]                      0.1302  3.169e-4  0.08451
    ·        fixed ×0.8748 (correlated positions, image borders, residual branch weight §11)                                                  [32, 8, 8]                     0.09964  4.142e-4  0.08451
    conv_10  conv 32→32 k3 p1                                                                                                                 [32, 8, 8]    0.01444   1.387   0.3591  1.185e-4  0.08713  0.7841  17.30  0.7841   37.12
    ·        fixed ×1.527 (branch end E[F²] = E[x²] §11)                                                                                      [32, 8, 8]                      0.8369  5.084e-5  0.08713
  shortcut:
    ·        fixed ×0.6175 (kernel 2 ≠ typical kernel 3 §6.2, correlated positions, zero padding, residual branch weight §11)                 [16, 16, 16]                    0.3191  2.000e-4   0.2614
    conv_11  conv 16→32 k2 s2                                                                                                                 [32, 8, 8]    0.03045   1.378   0.6219  2.052e-4   0.2614  0.7841  5.695  0.7841   37.12
    ·        fixed ×1.160 (branch end E[F²] = E[x²] §11)                                                                                      [32, 8, 8]                      0.8369  1.525e-4   0.2614
·            relu                                                                                                                             [32, 8, 8]                      0.4185  4.067e-4   0.3485
·            dropout 0.1                                                                                                                      [32, 8, 8]                      0.4185  4.067e-4   0.3485
·            global_avg_pool 64x                                                                                                              [32]                            0.1876     1.666    10.00
·            fixed ×0.9707 (kernel 1 ≠ typical kernel 3 §6.2, average pooling §8, zero padding)                                               [32]                            0.1768     1.768    10.00
fc           linear 32→10                                                                                                                     [10]           0.1996   3.571    1.129    0.8855    10.00  0.7841  1.000  0.7841   1.000
·            fixed ×0.9410 (output std target §7)                                                                                             [10]                             1.000     1.000    10.00
note: correlations between positions (average pooling, channel offsets, image borders) make these gradients larger than the paper's independent-positions model says, by more than 1.5x (κ): stem bias ×25.56, res1.main.conv_3 ×6.003 bias ×17.67, res1.main.conv_5 ×14.63 bias ×30.83, res2.main.conv_8 ×8.467 bias ×20.13, res2.main.conv_10 ×17.30 bias ×37.12, res2.shortcut.conv_11 ×5.695 bias ×37.12; the plan compensates them (in c_l and the fixed scalars), so every γ is still equal at initialization; nothing to do unless training is unstable there, and then `centred_weights: true` removes the part the channel offsets cause
note: 98.0% of the second moment out of the global pool is predicted to be channel offsets, the same for every input; such a head trained poorly in measurement (docs/coherence.md): declare `centred_weights: true`, flatten instead, or pool less
columns: layer = the prefix of the step's parameters (`conv1.weight`; unnamed layers are `<kind>_<position in the declaration>`), · for a step without; op = what the step does, `fixed ×f (why)` being a multiplier the calculus inserts; output = per-sample shape
  E[W²] = the variance the weights are drawn with; c_l = its numerator, E[W²] = c_l/(k √(n_in n_out)) with n the channel or feature counts, for geometric init (eq. 3): the header's c = 2/k* (§6.2), rescaled where the scaling factor or the corrections differ from the first layer's, which is why c_l may be far from c
  E[x²], E[dx²] = second moments of the step's output and of the gradient reaching it, for centred unit-variance input and E[dy²] = 1 at the output
  ς = the activation scaling factor n ρ² E[dx²] E[x²] (eq. 1, §4); ReLU, average pooling and fixed scalars keep it (Table 1)
  γ = the weight-to-gradient ratio E[dW²]/E[W²] (Theorem 1), with the correlations between positions: equal γ is equal conditioning, the calculus's goal; κ = that γ over the γ of independent positions (1: no correction)
  γ_bias, κ_bias = the same for the layer's bias (eq. 7)
```*/
pub struct SmallResNet {
    pub stem: ::scalenet::nn::Conv2d,
    pub res1_main_conv_3: ::scalenet::nn::Conv2d,
    pub res1_main_conv_5: ::scalenet::nn::Conv2d,
    pub res2_main_conv_8: ::scalenet::nn::Conv2d,
    pub res2_main_conv_10: ::scalenet::nn::Conv2d,
    pub res2_shortcut_conv_11: ::scalenet::nn::Conv2d,
    pub fc: ::scalenet::nn::Linear,
    /// Output calibration (section 7), 1 until [`Self::calibrate_output`] sets it; kept in the
    /// `VarMap` as `output_calibration` so it is saved and loaded with the weights, and
    /// applied detached so no optimizer trains it.
    pub output_calibration: ::scalenet::candle_core::Tensor,
}
#[allow(clippy::approx_constant, clippy::let_unit_value)]
const _: () = {
    use ::scalenet::__private as sn;
    /// Fixed scalar inserted by the calculus: input balances weights and biases §8.1, correlated positions, image borders.
    const FIXED_0: f64 = 1.0077532367766793;
    /// Fixed scalar inserted by the calculus: correlated positions, image borders, zero padding, residual branch weight §11.
    const FIXED_1: f64 = 0.5957244176071995;
    /// Fixed scalar inserted by the calculus: correlated positions, image borders, zero padding, residual branch weight §11.
    const FIXED_2: f64 = 0.8572759619064437;
    /// Fixed scalar inserted by the calculus: branch end E[F²] = E[x²] §11.
    const FIXED_3: f64 = 1.3474371389674868;
    /// Fixed scalar inserted by the calculus: kernel 2 ≠ typical kernel 3 §6.2, correlated positions, image borders, zero padding, residual branch weight §11.
    const FIXED_4: f64 = 0.6735437959302821;
    /// Fixed scalar inserted by the calculus: correlated positions, image borders, residual branch weight §11.
    const FIXED_5: f64 = 0.8747846046387069;
    /// Fixed scalar inserted by the calculus: branch end E[F²] = E[x²] §11.
    const FIXED_6: f64 = 1.5267274871233603;
    /// Fixed scalar inserted by the calculus: kernel 2 ≠ typical kernel 3 §6.2, correlated positions, zero padding, residual branch weight §11.
    const FIXED_7: f64 = 0.6175290643072683;
    /// Fixed scalar inserted by the calculus: branch end E[F²] = E[x²] §11.
    const FIXED_8: f64 = 1.1600620269815114;
    /// Fixed scalar inserted by the calculus: kernel 1 ≠ typical kernel 3 §6.2, average pooling §8, zero padding.
    const FIXED_9: f64 = 0.970728297332535;
    /// Fixed scalar inserted by the calculus: output std target §7.
    const FIXED_10: f64 = 0.9410136541792037;
    /// This function should not be called and only exists to emit a compiler warning.
    ///
    /// It is a No-OP in any case.
    #[allow(dead_code)]
    #[allow(non_camel_case_types)]
    #[allow(non_snake_case)]
    fn scalenet_warning_0() {
        #[deprecated(
            note = "98.0% of the second moment out of the global pool is predicted to be channel offsets, the same for every input; such a head trained poorly in measurement (docs/coherence.md): declare `centred_weights: true`, flatten instead, or pool less"
        )]
        #[allow(non_upper_case_globals)]
        const _w: () = ();
        let _ = _w;
    }
    impl SmallResNet {
        /// Per-sample input shape, `[C, H, W]` or `[D]`.
        pub const INPUT_SHAPE: [usize; 3] = [3, 16, 16];
        /// Per-sample output shape.
        pub const OUTPUT_SHAPE: [usize; 1] = [10];
        /// The fingerprint of the plan this code was generated from, computed at compile time:
        /// `Self::plan().fingerprint()` must equal it (the tests check every fixture).
        #[doc(hidden)]
        pub const PLAN_FINGERPRINT: u64 = 3640327255264068271u64;
        /// Creates the parameters through `vb` (`<layer>.weight`, `<layer>.bias`, candle-nn layout),
        /// drawn with the variances the calculus chose; biases start at zero. With a `VarMap`
        /// backend the draws come from candle's RNG, which cannot be seeded on CPU: use
        /// [`Self::new_seeded`] for reproducible runs, or load trained weights through `vb`.
        pub fn new(vb: sn::VarBuilder) -> sn::Result<Self> {
            ::core::result::Result::Ok(Self {
                stem: sn::conv2d(
                    vb.pp("stem"),
                    3,
                    16,
                    3,
                    1,
                    1,
                    true,
                    0.18230006600609097,
                )?,
                res1_main_conv_3: sn::conv2d(
                    vb.pp("res1.main.conv_3"),
                    16,
                    16,
                    3,
                    1,
                    1,
                    true,
                    0.13061191740025438,
                )?,
                res1_main_conv_5: sn::conv2d(
                    vb.pp("res1.main.conv_5"),
                    16,
                    16,
                    3,
                    1,
                    1,
                    true,
                    0.16320159976530063,
                )?,
                res2_main_conv_8: sn::conv2d(
                    vb.pp("res2.main.conv_8"),
                    16,
                    32,
                    2,
                    2,
                    0,
                    true,
                    0.14640223217793938,
                )?,
                res2_main_conv_10: sn::conv2d(
                    vb.pp("res2.main.conv_10"),
                    32,
                    32,
                    3,
                    1,
                    1,
                    true,
                    0.12017790346768445,
                )?,
                res2_shortcut_conv_11: sn::conv2d(
                    vb.pp("res2.shortcut.conv_11"),
                    16,
                    32,
                    2,
                    2,
                    0,
                    true,
                    0.17449034419080386,
                )?,
                fc: sn::linear(vb.pp("fc"), 32, 10, true, 0.4468035142312488)?,
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
                    height: 16,
                    width: 16,
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
            spec.typical_kernel = None;
            spec.layers = ::std::vec::Vec::from([
                layer(
                    Some("stem"),
                    "conv",
                    &[
                        Some(Count(16)),
                        Some(Count(3)),
                        Some(Count(1)),
                        Some(Count(1)),
                        Some(Flag(true)),
                        Some(Count(1)),
                    ],
                    None,
                    false,
                ),
                layer(
                    Some("res1"),
                    "residual",
                    &[Some(Number(0.5)), None],
                    Some((
                        ::std::vec::Vec::from([
                            layer(None, "relu", &[], None, false),
                            layer(
                                None,
                                "conv",
                                &[
                                    Some(Count(16)),
                                    Some(Count(3)),
                                    Some(Count(1)),
                                    Some(Count(1)),
                                    Some(Flag(true)),
                                    Some(Count(1)),
                                ],
                                None,
                                false,
                            ),
                            layer(None, "relu", &[], None, false),
                            layer(
                                None,
                                "conv",
                                &[
                                    Some(Count(16)),
                                    Some(Count(3)),
                                    Some(Count(1)),
                                    Some(Count(1)),
                                    Some(Flag(true)),
                                    Some(Count(1)),
                                ],
                                None,
                                false,
                            ),
                        ]),
                        None,
                    )),
                    false,
                ),
                layer(
                    Some("res2"),
                    "residual",
                    &[Some(Number(0.5)), None],
                    Some((
                        ::std::vec::Vec::from([
                            layer(None, "relu", &[], None, false),
                            layer(
                                None,
                                "conv",
                                &[
                                    Some(Count(32)),
                                    Some(Count(2)),
                                    Some(Count(2)),
                                    Some(Count(0)),
                                    Some(Flag(true)),
                                    Some(Count(1)),
                                ],
                                None,
                                false,
                            ),
                            layer(None, "relu", &[], None, false),
                            layer(
                                None,
                                "conv",
                                &[
                                    Some(Count(32)),
                                    Some(Count(3)),
                                    Some(Count(1)),
                                    Some(Count(1)),
                                    Some(Flag(true)),
                                    Some(Count(1)),
                                ],
                                None,
                                false,
                            ),
                        ]),
                        Some(
                            ::std::vec::Vec::from([
                                layer(
                                    None,
                                    "conv",
                                    &[
                                        Some(Count(32)),
                                        Some(Count(2)),
                                        Some(Count(2)),
                                        Some(Count(0)),
                                        Some(Flag(true)),
                                        Some(Count(1)),
                                    ],
                                    None,
                                    false,
                                ),
                            ]),
                        ),
                    )),
                    false,
                ),
                layer(None, "relu", &[], None, false),
                layer(None, "dropout", &[Some(Number(0.1))], None, false),
                layer(None, "global_avg_pool", &[], None, false),
                layer(
                    Some("fc"),
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
            sn::Report::new("SmallResNet", Self::plan())
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
            sn::check_input(
                xs,
                &Self::INPUT_SHAPE,
                self.output_calibration.dtype(),
                "SmallResNet",
            )?;
            let mut hook = sn::Hook::new(hook);
            let xs = xs.clone();
            #[allow(unused_mut)]
            let mut pending: f64 = 1.0;
            let xs = hook.after(0, sn::defer(xs, FIXED_0, &mut pending), &mut pending)?;
            let xs = hook
                .after(
                    1,
                    self.stem.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook
                .after(
                    2,
                    {
                        let entry = sn::take(&mut pending);
                        let (main, main_scale) = {
                            let xs = xs.clone();
                            let mut pending = entry;
                            let xs = sn::ops::relu(&xs)?;
                            let xs = sn::defer(xs, FIXED_1, &mut pending);
                            let xs = self
                                .res1_main_conv_3
                                .forward_scaled(&xs, sn::take(&mut pending))?;
                            let xs = sn::ops::relu(&xs)?;
                            let xs = sn::defer(xs, FIXED_2, &mut pending);
                            let xs = self
                                .res1_main_conv_5
                                .forward_scaled(&xs, sn::take(&mut pending))?;
                            let xs = sn::defer(xs, FIXED_3, &mut pending);
                            (xs, pending)
                        };
                        let (shortcut, shortcut_scale) = {
                            let mut pending = entry;
                            (xs, pending)
                        };
                        sn::ops::weighted_sum(
                            &main,
                            0.5 * main_scale,
                            &shortcut,
                            0.8660254037844386 * shortcut_scale,
                        )?
                    },
                    &mut pending,
                )?;
            let xs = hook
                .after(
                    3,
                    {
                        let entry = sn::take(&mut pending);
                        let (main, main_scale) = {
                            let xs = xs.clone();
                            let mut pending = entry;
                            let xs = sn::ops::relu(&xs)?;
                            let xs = sn::defer(xs, FIXED_4, &mut pending);
                            let xs = self
                                .res2_main_conv_8
                                .forward_scaled(&xs, sn::take(&mut pending))?;
                            let xs = sn::ops::relu(&xs)?;
                            let xs = sn::defer(xs, FIXED_5, &mut pending);
                            let xs = self
                                .res2_main_conv_10
                                .forward_scaled(&xs, sn::take(&mut pending))?;
                            let xs = sn::defer(xs, FIXED_6, &mut pending);
                            (xs, pending)
                        };
                        let (shortcut, shortcut_scale) = {
                            let mut pending = entry;
                            let xs = sn::defer(xs, FIXED_7, &mut pending);
                            let xs = self
                                .res2_shortcut_conv_11
                                .forward_scaled(&xs, sn::take(&mut pending))?;
                            let xs = sn::defer(xs, FIXED_8, &mut pending);
                            (xs, pending)
                        };
                        sn::ops::weighted_sum(
                            &main,
                            0.5 * main_scale,
                            &shortcut,
                            0.8660254037844386 * shortcut_scale,
                        )?
                    },
                    &mut pending,
                )?;
            let xs = hook.after(4, sn::ops::relu(&xs)?, &mut pending)?;
            let xs = hook.after(5, sn::ops::dropout(&xs, 0.1, train)?, &mut pending)?;
            let xs = hook.after(6, sn::ops::global_avg_pool(&xs)?, &mut pending)?;
            let xs = hook.after(7, sn::defer(xs, FIXED_9, &mut pending), &mut pending)?;
            let xs = hook
                .after(
                    8,
                    self.fc.forward_scaled(&xs, sn::take(&mut pending))?,
                    &mut pending,
                )?;
            let xs = hook.after(9, sn::defer(xs, FIXED_10, &mut pending), &mut pending)?;
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
    impl sn::ModuleT for SmallResNet {
        /// `[batch, ...INPUT_SHAPE] -> [batch, ...OUTPUT_SHAPE]`; dropout is active only when `train`.
        fn forward_t(&self, xs: &sn::Tensor, train: bool) -> sn::Result<sn::Tensor> {
            self.forward_hooked(xs, train, ::core::option::Option::None)
        }
    }
    impl sn::Network for SmallResNet {
        const NAME: &'static str = "SmallResNet";
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
