//! The planner: from a checked declaration with its shapes to a [`Plan`]. Pass 1 builds the
//! steps on the nominal chain, choosing each weight's init and inserting the fixed scalars; pass 2
//! predicts the real chain's moments forward and backward.

use crate::blocks;
use crate::border_pass::chain_factors;
use crate::borders::{BorderFactors, Profile};
use crate::coherence::{self, Covariance};
use crate::diagnostic::Diagnostics;
use crate::moments::{self, Moments, Transfer, WeightGeometry};
use crate::plan::{child_path, walk_steps, ParamInit, Plan, ScaleReason, Step, StepOp, WeightInit};
use crate::propagate::{combine, predict_backward, predict_coherence, predict_forward, transfer, Mode};
use crate::registry::weight::{weight_geometry, weight_layer_moments};
use crate::registry::{Op, Role};
use crate::rules;
use crate::shapes::{self, Node, NodeKind};
use crate::spec::{InitScheme, LayerId, Mirror, NetworkSpec, Shape, WeightLaw, MAX_ELEMENTS};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Checks `spec` and computes its plan, or returns every rule it breaks.
///
/// Phases: the rules that need no shapes ([`crate::rules`]), then shape inference
/// (which spells out bottlenecks), then the planner. Layer ids are assigned
/// here from the declaration's structure, so a spec built by hand needs none.
pub fn analyze(spec: &NetworkSpec) -> Result<Plan, Diagnostics> {
    let mut spec = spec.clone();
    spec.assign_layer_ids();
    let mut diagnostics = Diagnostics::default();
    let broken = rules::check_declaration(&spec, &mut diagnostics);
    // An input with no element, or more than a tensor holds, was reported: no shape follows.
    let usable = spec.input.checked_numel().is_some_and(|n| n > 0 && n <= MAX_ELEMENTS);
    let nodes = usable.then(|| shapes::infer_chain(&spec.layers, spec.input, &broken, &mut diagnostics)).flatten();
    match (nodes, diagnostics.is_empty()) {
        (Some(nodes), true) => {
            let plan = Planner::new(&spec, &nodes).plan(&nodes);
            rules::check_unique_fields(&plan, &mut diagnostics);
            rules::check_finite_plan(&plan, &mut diagnostics);
            if diagnostics.is_empty() && spec.precision.is_some() {
                diagnostics.0.extend(crate::precision::check_format(&plan, spec.precision).0);
            }
            if diagnostics.is_empty() {
                Ok(plan)
            } else {
                Err(diagnostics)
            }
        }
        _ => Err(diagnostics),
    }
}

/// Every op the network runs outside fixed scalars, bottlenecks' main branches spelled out (their
/// shortcuts are projections that do not set `k*` or the slope).
fn leaf_ops(spec: &NetworkSpec) -> Vec<Op> {
    spec.walk()
        .flat_map(|layer| match layer.op {
            Op::Bottleneck { out_channels, width, stride, .. } => {
                blocks::bottleneck_main(out_channels, width, stride).into_iter().map(|l| l.op).collect()
            }
            ref op => vec![op.clone()],
        })
        .collect()
}

/// The most common kernel among weight layers (linear counts as 1; a bottleneck's 1x1 count
/// twice, its 3x3 once); ties go to the smaller.
pub fn most_common_kernel(spec: &NetworkSpec) -> usize {
    let mut counts = BTreeMap::new();
    for kernel in leaf_ops(spec).iter().filter_map(Op::weight_kernel) {
        *counts.entry(kernel).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by_key(|&(kernel, count)| (count, std::cmp::Reverse(kernel))).map_or(1, |(k, _)| k)
}

/// The slope `a` whose gain `2/(1 + a^2)` `c` is chosen for: the most common among the network's
/// ReLU-family activations (ReLU is `a = 0`); ties go to ReLU. Activations with another slope get
/// a fixed scalar.
fn network_slope(spec: &NetworkSpec) -> f64 {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    let mut count = |slope: f64, n: usize| match counts.iter_mut().find(|(s, _)| *s == slope) {
        Some((_, total)) => *total += n,
        None => counts.push((slope, n)),
    };
    for slope in leaf_ops(spec).iter().filter_map(Op::activation_slope) {
        count(slope, 1);
    }
    counts.into_iter().fold((0.0, 0), |best, (slope, n)| if n > best.1 { (slope, n) } else { best }).0
}

/// `E[W^2]` of a weight layer under `scheme` (eqs. 3-5).
pub fn weight_second_moment(scheme: InitScheme, geometry: &WeightGeometry, numerator: f64, gain: f64) -> f64 {
    let (n_in, n_out) = (geometry.fan_in as f64, geometry.fan_out as f64);
    let k = geometry.kernel as f64;
    match scheme {
        InitScheme::Geometric => numerator / (k * (n_in * n_out).sqrt()),
        InitScheme::FanIn => gain / (n_in * k * k),
        InitScheme::FanOut => gain / (n_out * k * k),
        InitScheme::Arithmetic => gain / (0.5 * (n_in + n_out) * k * k),
    }
}

/// `E[W^2]` of a mirrored layer whose `W0` is exactly (semi-)orthogonal: `W0` of `r x c` has
/// `min(r, c)` unit singular values, so its entries' mean square is `1/max(r, c)`, and mirroring
/// copies entries with a sign, which keeps it.
pub fn orthogonal_second_moment(mirror: Mirror, geometry: &WeightGeometry) -> f64 {
    let (rows, cols) = mirror.half_shape(geometry.fan_in, geometry.fan_out, geometry.kernel);
    1.0 / rows.max(cols) as f64
}

/// Which dimensions of each top-level weight layer `init: mirrored` mirrors: the first along its
/// outputs, the last along its inputs, the others along both (a lone layer: neither).
fn mirror_roles(spec: &NetworkSpec) -> BTreeMap<LayerId, Mirror> {
    if !spec.weights.is_mirrored() {
        return BTreeMap::new();
    }
    let weights: Vec<LayerId> =
        spec.layers.iter().filter(|layer| layer.op.weight_kernel().is_some()).map(|layer| layer.id).collect();
    let last = weights.len().saturating_sub(1);
    weights
        .iter()
        .enumerate()
        .map(|(index, &id)| {
            let role = match (index == 0, index == last) {
                (true, true) => Mirror::Unmirrored,
                (true, false) => Mirror::Outputs,
                (false, true) => Mirror::Inputs,
                (false, false) => Mirror::Both,
            };
            (id, role)
        })
        .collect()
}

/// What the scalars inserted so far in a chain have to say about the next one.
#[derive(Clone, Copy, Default)]
struct Since {
    seen_weight_layer: bool,
    pooled: bool,
    padded: bool,
    activation_mismatch: bool,
    in_branch: bool,
}

/// Where pass 1 stands in a chain: what it carries from one node to the next.
#[derive(Clone, Copy)]
struct Walk {
    /// The moments on the nominal chain.
    nominal: Moments,
    /// `sigma / sigma_0`: the scaling factor over the network input's.
    relative_scaling: f64,
    /// `E[dx^2] / E[dy^2]` from the chain's start to here.
    backward_gain: f64,
    since: Since,
}

impl Walk {
    fn start(input: Moments) -> Self {
        Walk { nominal: input, relative_scaling: 1.0, backward_gain: 1.0, since: Since::default() }
    }

    /// Through a node's transfer.
    fn through(&mut self, transfer: &Transfer, node: &Node) {
        let (numel_in, numel_out) = (node.input.numel(), node.output.numel());
        self.relative_scaling *= moments::scaling_ratio(&self.nominal, numel_in, transfer, numel_out);
        self.nominal = transfer.output;
        self.backward_gain *= transfer.backward_gain;
    }

    /// Through an inserted fixed scalar.
    fn scale(&mut self, factor: f64) {
        self.nominal = self.nominal.scaled(factor);
        self.backward_gain *= factor * factor;
    }
}

/// What the correlations between positions and the image borders do to one weight layer's (or
/// scalar's) moments and gammas, from a first plan; the planner's next build compensates them.
#[derive(Clone, Copy, Debug)]
struct Corrections {
    /// [`Step::coherence`].
    weight: f64,
    /// [`Step::bias_coherence`].
    bias: Option<f64>,
    borders: BorderFactors,
}

/// Builds at most, to compensate the corrections (see [`Planner::plan`]).
const MAX_BUILDS: usize = 6;

impl Corrections {
    /// Whether the cross terms between positions change a gamma.
    fn coherent(&self) -> bool {
        let off = |x: f64| (x - 1.0).abs() > 1e-9;
        off(self.weight) || self.bias.is_some_and(off)
    }

    fn close_to(&self, other: &Corrections) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        close(self.weight, other.weight)
            && match (self.bias, other.bias) {
                (Some(a), Some(b)) => close(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && close(self.borders.forward, other.borders.forward)
            && close(self.borders.backward, other.borders.backward)
            && close(self.borders.gradient, other.borders.gradient)
    }
}

/// A residual block's branch, as the key of [`Planner::branch_ratios`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Branch {
    Main,
    Shortcut,
}

struct Planner<'a> {
    spec: &'a NetworkSpec,
    /// Whether every map's covariance tables fit ([`coherence::fits`]): if not, the plan leaves
    /// the correlations between positions and the borders out.
    positions_modelled: bool,
    /// The scaling-factor ratio through each block's branches (by block and branch), recorded by
    /// [`Planner::branch_ratio`] and read by the build; cleared at each build, since the
    /// corrections it uses change between builds.
    branch_ratios: RefCell<BTreeMap<(LayerId, Branch), f64>>,
    /// By parameter path; empty on the first build and with `spatial_coherence` off.
    corrections: BTreeMap<String, Corrections>,
    mirror_roles: BTreeMap<LayerId, Mirror>,
    typical_kernel: usize,
    slope: f64,
    gain: f64,
    c: f64,
}

impl<'a> Planner<'a> {
    fn new(spec: &'a NetworkSpec, nodes: &[Node]) -> Self {
        let typical_kernel = spec.typical_kernel.unwrap_or_else(|| most_common_kernel(spec));
        let slope = network_slope(spec);
        let gain = 2.0 / (1.0 + slope * slope);
        Planner {
            spec,
            positions_modelled: coherence::fits(spec.input) && every_map_fits(nodes),
            branch_ratios: RefCell::default(),
            corrections: BTreeMap::new(),
            mirror_roles: mirror_roles(spec),
            typical_kernel,
            slope,
            gain,
            c: gain / typical_kernel as f64,
        }
    }

    /// Inserts a fixed scalar at the end of `steps`, or before a weight layer about to be added:
    /// then before the standalone biases and flattens that precede it, so they see the corrected
    /// moment too. Returns whether a scalar was needed.
    fn insert_scalar(
        &self,
        steps: &mut Vec<Step>,
        factor: f64,
        reasons: Vec<ScaleReason>,
        shape: Shape,
        before_weight: bool,
    ) -> bool {
        if !self.spec.fixed_scalars || !factor.is_finite() || (factor - 1.0).abs() <= 1e-9 {
            return false;
        }
        let mut at = steps.len();
        let moves_nothing = |step: &Step| match &step.op {
            StepOp::Declared { op, .. } => matches!(op.def().role, Role::Bias | Role::Reshape),
            _ => false,
        };
        while before_weight && at > 0 && moves_nothing(&steps[at - 1]) {
            at -= 1;
        }
        let shape = steps.get(at).map_or(shape, |s| s.input_shape);
        steps.insert(at, Step::new(StepOp::FixedScale { factor, reasons }, String::new(), shape, shape, None));
        true
    }

    /// The scaling-factor ratio `sigma_out / sigma_in` through `nodes` from `entry`, and the output
    /// moments, when the fixed scalars are on: each scalar scales both moments of a step and
    /// cancels in the ratio, a weight layer's ratio does not depend on its variance, and every
    /// non-empty branch ends with the scalar that gives `E[F^2] = E[x^2]`. So the moments'
    /// fractions (mean, coherent part, sign) decide the ratio, and one pass over the nodes gives
    /// what a dry build would, without building a step: nested blocks cost their size once, and
    /// their branches' ratios are recorded for the build that follows.
    ///
    /// Without the fixed scalars the ratio is the same product along a chain; where a nested
    /// block sums two branches, their unscaled sizes (which their inits set) would decide the
    /// mix, and this pass takes them equal, as the branch-end scalars would make them. The ratio
    /// moves only where pooling follows a ReLU inside such a block.
    /// `prefix` is the chain's parameter path, for the layers' border factors.
    fn branch_ratio(&self, prefix: &str, nodes: &[Node], entry: Moments) -> (f64, Moments) {
        let mut moments = entry;
        let mut ratio = 1.0;
        for node in nodes {
            let path = child_path(prefix, node.name.as_deref().unwrap_or_default());
            let (numel_in, numel_out) = (node.input.numel() as f64, node.output.numel() as f64);
            let transfer = match &node.kind {
                NodeKind::Block { alpha, beta, main, shortcut, .. } => {
                    // Each branch's output brought back to E[x^2] by its branch-end scalar, and its
                    // backward gain from its ratio: E[dx^2]/E[dy^2] = n_out / (n_in r).
                    let branch = |nodes: &[Node], which: Branch| -> (Moments, f64) {
                        if nodes.is_empty() {
                            return (moments, 1.0);
                        }
                        let (r, out) = self.branch_ratio(&branch_path(&path, nodes, main), nodes, moments);
                        self.branch_ratios.borrow_mut().insert((node.id, which), r);
                        (out.scaled((moments.second / out.second).sqrt()), numel_out / (numel_in * r))
                    };
                    let ((main_out, main_gain), (shortcut_out, shortcut_gain)) =
                        (branch(main, Branch::Main), branch(shortcut, Branch::Shortcut));
                    Transfer {
                        output: combine(*alpha, shortcut_out, *beta, main_out),
                        backward_gain: alpha * alpha * shortcut_gain + beta * beta * main_gain,
                    }
                }
                NodeKind::Leaf(op) => {
                    // Any variance will do for a weight layer: its ratio is 1 and its output centred.
                    let params = weight_geometry(op, node.input, node.output).map(|geometry| {
                        ParamInit::Weight(WeightInit {
                            shape: Vec::new(),
                            geometry,
                            numerator: 1.0,
                            second_moment: 1.0,
                            bias: false,
                            mirror: Mirror::Gaussian,
                            borders: self.corrections.get(&path).map_or(BorderFactors::NONE, |c| c.borders),
                            centred: self.spec.centred_weights && centrable(&geometry),
                        })
                    });
                    let step = Step::new(
                        StepOp::Declared { id: node.id, op: op.clone() },
                        String::new(),
                        node.input,
                        node.output,
                        params,
                    );
                    transfer(&step, moments, Mode::Nominal)
                }
            };
            ratio *= moments::scaling_ratio(&moments, node.input.numel(), &transfer, node.output.numel());
            moments = transfer.output;
        }
        (ratio, moments)
    }

    /// Pass 1, on the nominal chain: builds the steps of `nodes` from where `walk` stands, choosing
    /// each weight layer's init and the fixed scalars, and leaves `walk` at the chain's end.
    ///
    /// One rule gives every fixed scalar. Biases are balanced against weights when, at every
    /// weight layer output, `n E[y^2]^2 = c_l^2` (eqs. 7-8 with gamma = sigma/c_l^2): so the
    /// calculus puts one scalar before each weight layer that brings its output to
    /// `E[y^2] = c_l / sqrt(n_out)`. Before the first layer this is the input scalar
    /// `1/(n0 k0^2)^(1/4)` of section 8.1; before a layer whose kernel is not `k*` it is
    /// `sqrt(k*/k)` of section 6.2; after average pooling it undoes the pooling (section 8).
    fn build_chain(&self, prefix: &str, nodes: &[Node], walk: &mut Walk) -> Vec<Step> {
        let mut steps: Vec<Step> = Vec::with_capacity(nodes.len());
        for node in nodes {
            let name = node.name.clone().unwrap_or_default();
            let path = child_path(prefix, &name);
            let (step, transfer) = match &node.kind {
                NodeKind::Block { .. } => self.build_block(node, &path, name, walk),
                NodeKind::Leaf(op) => {
                    let params = self.plan_leaf(op, node, &path, &mut steps, walk);
                    let step = Step::new(
                        StepOp::Declared { id: node.id, op: op.clone() },
                        name,
                        node.input,
                        node.output,
                        params,
                    );
                    let t = transfer(&step, walk.nominal, Mode::Nominal);
                    (step, t)
                }
            };
            walk.through(&transfer, node);
            steps.push(step);
        }
        steps
    }

    /// A residual block's step, its branches built, and its nominal transfer from `walk`.
    fn build_block(&self, node: &Node, path: &str, name: String, walk: &mut Walk) -> (Step, Transfer) {
        let NodeKind::Block { keyword, alpha, beta, main, shortcut } = &node.kind else { unreachable!("a block") };
        let entry = walk.nominal;
        let branch_path = |nodes: &[Node]| branch_path(path, nodes, main);
        // sigma_B / sigma at the block input through each branch, a scale-free product of op
        // ratios (1 unless pooling follows a ReLU), from a moments-only pass
        // ([`Planner::branch_ratio`]), which also records the ratios of the blocks nested in the
        // branch: each branch is walked once, however deep the nesting.
        let ratio_through = |nodes: &[Node], which: Branch| {
            let known = self.branch_ratios.borrow().get(&(node.id, which)).copied();
            known.unwrap_or_else(|| {
                let ratio = self.branch_ratio(&branch_path(nodes), nodes, entry).0;
                self.branch_ratios.borrow_mut().insert((node.id, which), ratio);
                ratio
            })
        };
        let (main_ratio, shortcut_ratio) =
            (ratio_through(main, Branch::Main), ratio_through(shortcut, Branch::Shortcut));
        // sigma at the block output: the gradients of both branches add (Appendix B).
        let output_scaling = walk.relative_scaling / (alpha * alpha / shortcut_ratio + beta * beta / main_ratio);
        let mut branch = |nodes: &[Node], weight: f64, ratio: f64| {
            // A branch carries the share weight^2 of sigma at the sum (section 11).
            let scaling =
                if self.spec.branch_scaling { output_scaling * weight * weight / ratio } else { walk.relative_scaling };
            let mut inside = Walk {
                nominal: entry,
                relative_scaling: scaling,
                backward_gain: 1.0,
                since: Since { in_branch: true, ..walk.since },
            };
            let mut steps = self.build_chain(&branch_path(nodes), nodes, &mut inside);
            if !nodes.is_empty() {
                let factor = (entry.second / inside.nominal.second).sqrt();
                let shape = nodes.last().expect("nonempty").output;
                if self.insert_scalar(&mut steps, factor, vec![ScaleReason::BranchEnd], shape, false) {
                    inside.scale(factor);
                }
            }
            walk.since.seen_weight_layer |= inside.since.seen_weight_layer;
            (steps, inside.nominal, inside.backward_gain)
        };
        let (main_steps, main_out, main_gain) = branch(main, *beta, main_ratio);
        let (shortcut_steps, shortcut_out, shortcut_gain) = branch(shortcut, *alpha, shortcut_ratio);
        // The block's nominal transfer from its branches as built: walking them again would cost
        // each level of nesting the size of everything inside it.
        let transfer = Transfer {
            output: combine(*alpha, shortcut_out, *beta, main_out),
            backward_gain: alpha * alpha * shortcut_gain + beta * beta * main_gain,
        };
        let op = StepOp::Block {
            id: node.id,
            keyword,
            alpha: *alpha,
            beta: *beta,
            main: main_steps,
            shortcut: shortcut_steps,
        };
        (Step::new(op, name, node.input, node.output, None), transfer)
    }

    /// A declared layer's parameters, if it has any; what it tells the scalars after it goes into
    /// `walk.since`.
    fn plan_leaf(&self, op: &Op, node: &Node, path: &str, steps: &mut Vec<Step>, walk: &mut Walk) -> Option<ParamInit> {
        let since = &mut walk.since;
        match (op.def().role, op) {
            (Role::Weight, Op::Conv2d { bias, .. } | Op::Linear { bias, .. }) => {
                Some(self.plan_weight_layer(op, node, path, *bias, steps, walk))
            }
            (Role::Scalar, _) => {
                let coherence = self.corrections.get(path).map_or(1.0, |c| c.weight);
                let numerator = self.c * (walk.relative_scaling * coherence).sqrt();
                Some(ParamInit::Scalar { value: numerator.sqrt(), fixed: 1.0 / numerator.sqrt() })
            }
            (Role::Bias, _) => Some(ParamInit::Bias { channels: node.input.channels() }),
            (Role::Activation, _) => {
                since.activation_mismatch |= op.activation_slope() != Some(self.slope);
                None
            }
            // Kept with `#[allow(unscaled)]`, predicted as the identity: not the gain `c` was
            // chosen for.
            (Role::Unscaled, _) => {
                since.activation_mismatch = true;
                None
            }
            (Role::Pooling, _) => {
                since.pooled = true;
                None
            }
            _ => None,
        }
    }

    /// A weight layer's init, and the fixed scalar before it (inserted into `steps`) that brings
    /// its output to `E[y^2] = c_l / sqrt(n_out)`, corrected for the cross terms between
    /// positions, the borders and centred rows.
    fn plan_weight_layer(
        &self,
        op: &Op,
        node: &Node,
        path: &str,
        bias: bool,
        steps: &mut Vec<Step>,
        walk: &mut Walk,
    ) -> ParamInit {
        let geometry = weight_geometry(op, node.input, node.output).expect("weight layer");
        let corrections = self.corrections.get(path);
        let borders = corrections.map_or(BorderFactors::NONE, |c| c.borders);
        let nominal = walk.nominal;
        // gamma = (sigma_in / c_l^2) kappa g / b over the paper's, with the cross terms' kappa and
        // the borders' gradient and backward factors g and b. Centred rows see their input without
        // its common mean: the weight gradient, a product with that input, shrinks by the same share.
        let centred = self.spec.centred_weights && centrable(&geometry);
        let seen = if centred { nominal.without_common_mean() } else { nominal };
        let seen_share = if nominal.second > 0.0 { seen.second / nominal.second } else { 1.0 };
        let gamma_factor = corrections.map_or(1.0, |c| c.weight) * borders.gradient / borders.backward * seen_share;
        let numerator = self.c * walk.relative_scaling.sqrt() * gamma_factor.sqrt();
        let mirror = self.mirror_roles.get(&node.id).copied().unwrap_or_default();
        let second_moment = match self.spec.weights {
            WeightLaw::MirroredOrthogonal => orthogonal_second_moment(mirror, &geometry),
            _ => weight_second_moment(self.spec.init, &geometry, numerator, self.gain),
        };
        // Bias balance: `n E[y^2]^2 = c_l^2 kappa_b f / (kappa g)`, f the forward factor.
        let balance = corrections
            .and_then(|c| c.bias.map(|b| (b * borders.forward / (c.weight * borders.gradient)).sqrt()))
            .unwrap_or(1.0);
        let target = numerator * balance / (geometry.fan_out as f64).sqrt();
        let produced = weight_layer_moments(op, node.input, &geometry, second_moment, centred, nominal).output.second
            * borders.forward;
        let reasons = self.scalar_reasons(&geometry, corrections, borders, &walk.since);
        let factor = (target / produced).sqrt();
        if self.insert_scalar(steps, factor, reasons, node.input, true) {
            walk.scale(factor);
        }
        walk.since = Since {
            seen_weight_layer: true,
            padded: geometry.coverage < 1.0,
            in_branch: walk.since.in_branch,
            ..Since::default()
        };
        ParamInit::Weight(WeightInit {
            shape: match op {
                Op::Conv2d { out_channels, kernel, .. } => vec![*out_channels, geometry.fan_in, *kernel, *kernel],
                _ => vec![geometry.fan_out, geometry.fan_in],
            },
            geometry,
            numerator,
            second_moment,
            bias,
            mirror,
            borders,
            centred,
        })
    }

    /// Why the scalar before a weight layer is needed, in the report's words.
    fn scalar_reasons(
        &self,
        geometry: &WeightGeometry,
        corrections: Option<&Corrections>,
        borders: BorderFactors,
        since: &Since,
    ) -> Vec<ScaleReason> {
        let mut reasons = Vec::new();
        if !since.seen_weight_layer {
            reasons.push(ScaleReason::Input);
        }
        if geometry.kernel != self.typical_kernel {
            reasons.push(ScaleReason::Kernel { kernel: geometry.kernel, typical: self.typical_kernel });
        }
        let other_init = self.spec.init != InitScheme::Geometric || self.spec.weights == WeightLaw::MirroredOrthogonal;
        for (flag, reason) in [
            (corrections.is_some_and(Corrections::coherent), ScaleReason::Coherence),
            (borders.matter(), ScaleReason::Borders),
            (since.pooled, ScaleReason::Pooling),
            (since.padded, ScaleReason::Padding),
            (since.activation_mismatch, ScaleReason::Activation),
            (since.in_branch, ScaleReason::Branch),
            (other_init && since.seen_weight_layer, ScaleReason::InitScheme),
        ] {
            if flag {
                reasons.push(reason);
            }
        }
        reasons
    }

    /// Pass 1 and 2 on `nodes`: the steps with their predictions.
    fn build(&self, nodes: &[Node], input_moments: Moments, output: Shape) -> Vec<Step> {
        self.branch_ratios.borrow_mut().clear();
        let mut walk = Walk::start(input_moments);
        let mut steps = self.build_chain("", nodes, &mut walk);
        let nominal = walk.nominal;
        // Section 7 sets the output's scale. What carries the input is the part that varies with
        // it: with `varying_output_std`, offsets the same for every input (ReLU means that a
        // global pool keeps, most of all) are left out.
        let calibrated = if self.spec.varying_output_std && nominal.input_dependent_std() > 0.0 {
            nominal.input_dependent_std()
        } else {
            nominal.std()
        };
        self.insert_scalar(&mut steps, self.spec.output_std / calibrated, vec![ScaleReason::Output], output, false);

        // Pass 2: the real chain, forward then backward (batch-size-1 semantics: E[dy^2] = 1 at
        // the output, as for loss = y . N with N ~ N(0, I)), then the cross terms between positions.
        predict_forward(&mut steps, input_moments);
        predict_backward(&mut steps, 1.0);
        if self.positions_modelled {
            predict_coherence(&mut steps, Covariance::white(output, 1.0), self.spec.spatial_coherence);
        }
        steps
    }

    fn plan(mut self, nodes: &[Node]) -> Plan {
        let input = self.spec.input;
        let output = nodes.last().map_or(input, |n| n.output);
        let input_moments = Moments::centred(1.0);
        let mut steps = self.build(nodes, input_moments, output);
        // The coherence factors depend on correlations, not on scale, so the weights and scalars
        // that compensate them leave them alone; only the weights by which a residual block mixes
        // its branches' border profiles move with the plan, a little. So builds converge at once:
        // two or three reach 1e-12.
        if self.spec.spatial_coherence && self.positions_modelled {
            for _ in 0..MAX_BUILDS {
                let corrections = corrections_by_path(&steps, input, output);
                let settled = corrections.len() == self.corrections.len()
                    && corrections.iter().zip(&self.corrections).all(|((_, new), (_, old))| new.close_to(old));
                let nothing =
                    self.corrections.is_empty() && !corrections.values().any(|c| c.coherent() || c.borders.matter());
                if settled || nothing {
                    break;
                }
                self.corrections = corrections;
                steps = self.build(nodes, input_moments, output);
            }
        }

        let unscaled_layers =
            self.spec.walk().filter(|layer| matches!(layer.op, Op::Unscaled(_))).map(|layer| layer.id).collect();
        let mut plan = Plan {
            input,
            output,
            init: self.spec.init,
            weights: self.spec.weights,
            typical_kernel: self.typical_kernel,
            gain: self.gain,
            c: self.c,
            output_std: self.spec.output_std,
            spatial_coherence: self.spec.spatial_coherence,
            positions_modelled: self.positions_modelled,
            centred_weights: self.spec.centred_weights,
            varying_output_std: self.spec.varying_output_std,
            precision: self.spec.precision,
            input_moments,
            steps,
            unscaled_layers,
            paths: Vec::new(),
        };
        plan.paths = paths(&plan.steps, "");
        plan
    }
}

/// The coherence and border factors of every weight layer and scalar of a built plan, by
/// parameter path.
fn corrections_by_path(steps: &[Step], input: Shape, output: Shape) -> BTreeMap<String, Corrections> {
    let mut borders = BTreeMap::new();
    chain_factors("", steps, Profile::uniform(input).as_ref(), Profile::uniform(output), &mut |path, factors| {
        borders.insert(path, factors);
    });
    walk_steps(steps)
        .into_iter()
        .zip(paths(steps, ""))
        .filter_map(|((_, step), path)| {
            let borders = borders.get(&path).copied().unwrap_or(BorderFactors::NONE);
            step.coherence.map(|weight| (path, Corrections { weight, bias: step.bias_coherence, borders }))
        })
        .collect()
}

/// Whether every map the network's layers receive or produce fits the covariance tables.
fn every_map_fits(nodes: &[Node]) -> bool {
    nodes.iter().all(|node| {
        coherence::fits(node.input)
            && coherence::fits(node.output)
            && match &node.kind {
                NodeKind::Block { main, shortcut, .. } => every_map_fits(main) && every_map_fits(shortcut),
                NodeKind::Leaf(_) => true,
            }
    })
}

/// The parameter path of a block's branch `nodes` (its `main` or its shortcut) at `block`.
fn branch_path(block: &str, nodes: &[Node], main: &[Node]) -> String {
    let label = if std::ptr::eq(nodes, main) { "main" } else { "shortcut" };
    format!("{block}.{label}")
}

/// Parameter paths in walk order: `block.main.layer`, `block.shortcut.layer`.
fn paths(steps: &[Step], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps {
        let path = child_path(prefix, &step.name);
        if let StepOp::Block { main, shortcut, .. } = &step.op {
            out.push(path.clone());
            out.extend(paths(main, &format!("{path}.main")));
            out.extend(paths(shortcut, &format!("{path}.shortcut")));
        } else {
            out.push(path);
        }
    }
    out
}

/// Whether `centred_weights` centres this layer's rows: a row of one entry would become zero, so
/// such a layer (one input feature, or one input channel and a 1x1 kernel) keeps its weights.
fn centrable(geometry: &WeightGeometry) -> bool {
    geometry.fan_in * geometry.kernel * geometry.kernel > 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagate::chain_transfer;
    use crate::spec::{LayerSpec, Residual};

    /// The moments-only pass gives the ratio the dry build measures, on branches where it is not
    /// 1: average pooling after a ReLU, a nested block, a bottleneck.
    #[test]
    fn branch_ratio_equals_the_dry_build() {
        let conv = |out, kernel, stride, padding| Op::Conv2d {
            out_channels: out,
            kernel,
            stride,
            padding,
            bias: true,
            groups: 1,
        };
        let inner = Op::Residual(Residual {
            alpha: None,
            beta: Some(0.6),
            main: vec![
                LayerSpec::new(Op::Relu),
                LayerSpec::new(Op::AvgPool2d { kernel: 2, stride: 2 }),
                LayerSpec::new(conv(8, 1, 1, 0)),
            ],
            shortcut: Some(vec![LayerSpec::new(Op::AvgPool2d { kernel: 2, stride: 2 })]),
        });
        let outer = Op::Residual(Residual {
            alpha: None,
            beta: Some(0.5),
            main: vec![
                LayerSpec::new(Op::Relu),
                LayerSpec::new(conv(8, 3, 1, 1)),
                LayerSpec::new(inner),
                LayerSpec::new(Op::Relu),
            ],
            shortcut: Some(vec![LayerSpec::new(Op::AvgPool2d { kernel: 2, stride: 2 })]),
        });
        let mut spec = NetworkSpec::new(Shape::Image { channels: 8, height: 8, width: 8 })
            .layer(conv(8, 3, 1, 1))
            .layer(Op::Relu)
            .layer(outer)
            .layer(Op::Bottleneck { out_channels: 16, width: 4, stride: 2, beta: 0.5 });
        spec.assign_layer_ids();
        let nodes = shapes::infer_chain(&spec.layers, spec.input, &[], &mut Diagnostics::default()).unwrap();
        let planner = Planner::new(&spec, &nodes);
        let mut entry = Moments::centred(1.0);
        let mut checked = 0;
        for node in &nodes {
            if let NodeKind::Block { main, shortcut, .. } = &node.kind {
                for branch in [main, shortcut] {
                    let fast = planner.branch_ratio("", branch, entry).0;
                    planner.branch_ratios.borrow_mut().clear();
                    let mut walk = Walk::start(entry);
                    walk.since = Since { in_branch: true, seen_weight_layer: true, ..Since::default() };
                    planner.build_chain("", branch, &mut walk);
                    let dry = walk.relative_scaling;
                    assert!((fast / dry - 1.0).abs() < 1e-9, "{fast} vs {dry}");
                    checked += usize::from((dry - 1.0).abs() > 1e-3);
                }
            }
            let step = &planner.build_chain("", std::slice::from_ref(node), &mut Walk::start(entry))[..];
            entry = chain_transfer(step, entry, Mode::Nominal).0;
        }
        assert!(checked >= 3, "only {checked} branches change the scaling factor");
    }
}
