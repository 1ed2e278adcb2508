//! [`HostEnsemble`]: the copies of a vector [`Ensemble`] trained by plain Rust loops, one thread
//! per group of copies. Candle's per-op cost and the batched products' memory traffic dominate a
//! sweep's small steps (the paper's per-sample SGD is `P` matrix-vector products a step); here
//! each copy's parameters are one contiguous buffer that stays in cache while the copy steps, and
//! a step is a handful of fused loops: 56 copies of the section 9 network step in 1.06 ms at
//! minibatch 1 against 30.6 ms as a candle ensemble, and 15.0 against 72.8 ms at minibatch 32
//! (`cargo bench --bench ensemble`, 2 cores). Same initial values, same SGD (weight decay added to the
//! gradient, one rate per copy), same losses as [`Ensemble`] and [`EnsembleSgd`] up to float
//! rounding (`tests/ensemble.rs`).

use super::{Ensemble, EnsembleError, Layer};
use candle_core::DType;

/// A step of one copy's forward pass; offsets index the copy's parameter buffer.
#[derive(Debug, Clone)]
enum HostLayer {
    /// `weight` `[out, in]` row-major at `weight`, bias `[out]` at `bias`.
    Linear {
        inputs: usize,
        outputs: usize,
        weight: usize,
        bias: Option<usize>,
    },
    /// `u` at `at`, times `fixed`.
    Scalar {
        at: usize,
        fixed: f32,
    },
    Bias {
        at: usize,
    },
    Scale(f32),
    LeakyRelu(f32),
    Identity,
}

/// The copies of a vector network as host buffers (see the module documentation).
#[derive(Debug, Clone)]
pub struct HostEnsemble {
    layers: Vec<HostLayer>,
    /// `params[p]`: copy `p`'s parameters, in the layers' order.
    params: Vec<Vec<f32>>,
    calibration: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl HostEnsemble {
    /// The copies of `ensemble`, with their current values. Vector networks only (linear layers,
    /// ReLU-family activations, scalars, biases, flatten, dropout off).
    pub fn new(ensemble: &Ensemble) -> Result<Self, EnsembleError> {
        let population = ensemble.population;
        let mut params: Vec<Vec<f32>> = vec![Vec::new(); population];
        let mut layers = Vec::new();
        let mut append = |tensor: &candle_core::Tensor| -> Result<usize, EnsembleError> {
            let at = params[0].len();
            let per_copy = tensor.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?;
            for (copy, values) in params.iter_mut().zip(per_copy) {
                copy.extend(values);
            }
            Ok(at)
        };
        let mut width = ensemble.input.numel();
        if ensemble.input.area() != 1 {
            return Err(EnsembleError::Unsupported { step: 0, op: format!("input {}", ensemble.input) });
        }
        for (index, layer) in ensemble.layers.iter().enumerate() {
            layers.push(match layer {
                Layer::Linear { centred: true, .. } => {
                    return Err(EnsembleError::Unsupported { step: index, op: "a centred linear layer".into() })
                }
                Layer::Linear { weight, bias, centred: false } => {
                    // The ensemble stores `[P, in, out]`; rows of `[out, in]` make the products contiguous.
                    let (_, inputs, outputs) = weight.as_tensor().dims3()?;
                    let weight = append(&weight.as_tensor().transpose(1, 2)?.contiguous()?)?;
                    let bias = bias.as_ref().map(|b| append(b.as_tensor())).transpose()?;
                    width = outputs;
                    HostLayer::Linear { inputs, outputs, weight, bias }
                }
                Layer::Scalar { weight, fixed } => {
                    HostLayer::Scalar { at: append(&weight.as_tensor().unsqueeze(1)?)?, fixed: *fixed as f32 }
                }
                Layer::Bias(bias) => HostLayer::Bias { at: append(bias.as_tensor())? },
                Layer::Scale(factor) => HostLayer::Scale(*factor as f32),
                Layer::LeakyRelu(slope) => HostLayer::LeakyRelu(*slope as f32),
                Layer::Relu => HostLayer::LeakyRelu(0.0),
                Layer::Identity => HostLayer::Identity,
                _ => return Err(EnsembleError::Unsupported { step: index, op: "an image layer".into() }),
            });
        }
        let calibration = ensemble.calibration.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(HostEnsemble { layers, params, calibration, inputs: ensemble.input.numel(), outputs: width })
    }

    /// The number of copies.
    pub fn population(&self) -> usize {
        self.params.len()
    }

    /// One SGD step per copy on its own minibatch: `xs` `[P, B, D]` and `labels` `[P, B]`
    /// flattened, softmax cross-entropy averaged over the minibatch, `w -= lr_p (grad + decay w)`.
    /// Returns each copy's loss before the update.
    pub fn step(
        &mut self,
        xs: &[f32],
        labels: &[u32],
        learning_rates: &[f64],
        weight_decay: f64,
    ) -> Result<Vec<f64>, EnsembleError> {
        let population = self.population();
        let batch = self.check(xs, labels)?;
        if learning_rates.len() != population {
            let expected = format!("one per copy ({population})");
            return Err(EnsembleError::Shape { what: "learning rates", expected, got: vec![learning_rates.len()] });
        }
        let (layers, inputs, outputs) = (&self.layers, self.inputs, self.outputs);
        let mut losses = vec![0.0; population];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(population).max(1);
        let chunk = population.div_ceil(threads);
        std::thread::scope(|scope| {
            for (((params, calibration), losses), first) in self
                .params
                .chunks_mut(chunk)
                .zip(self.calibration.chunks(chunk))
                .zip(losses.chunks_mut(chunk))
                .zip((0..population).step_by(chunk))
            {
                scope.spawn(move || {
                    let mut work = Workspace::default();
                    for (offset, ((params, &calibration), loss)) in
                        params.iter_mut().zip(calibration).zip(losses.iter_mut()).enumerate()
                    {
                        let copy = first + offset;
                        let rows = &xs[copy * batch * inputs..(copy + 1) * batch * inputs];
                        let targets = &labels[copy * batch..(copy + 1) * batch];
                        *loss = train_copy(
                            layers,
                            params,
                            calibration,
                            rows,
                            targets,
                            outputs,
                            learning_rates[copy] as f32,
                            weight_decay as f32,
                            &mut work,
                        );
                    }
                });
            }
        });
        Ok(losses)
    }

    /// Each copy's mean loss on its own examples, without training.
    pub fn losses(&self, xs: &[f32], labels: &[u32]) -> Result<Vec<f64>, EnsembleError> {
        let batch = self.check(xs, labels)?;
        let mut work = Workspace::default();
        Ok((0..self.population())
            .map(|copy| {
                let rows = &xs[copy * batch * self.inputs..(copy + 1) * batch * self.inputs];
                let targets = &labels[copy * batch..(copy + 1) * batch];
                forward(&self.layers, &self.params[copy], self.calibration[copy], rows, batch, &mut work);
                cross_entropy(work.activations.last().expect("an output"), targets, self.outputs, None)
            })
            .collect())
    }

    /// Sets each copy's output calibration so its output on its own `xs` has standard deviation
    /// `target_std` (as [`Ensemble::calibrate_output`]).
    pub fn calibrate_output(&mut self, xs: &[f32], target_std: f64) -> Result<(), EnsembleError> {
        let batch = xs.len() / (self.population() * self.inputs).max(1);
        let mut work = Workspace::default();
        for copy in 0..self.population() {
            let rows = &xs[copy * batch * self.inputs..(copy + 1) * batch * self.inputs];
            forward(&self.layers, &self.params[copy], self.calibration[copy], rows, batch, &mut work);
            let output = work.activations.last().expect("an output");
            let mean = output.iter().map(|&v| f64::from(v)).sum::<f64>() / output.len() as f64;
            let std = (output.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / output.len() as f64).sqrt();
            if !(std.is_finite() && std > 0.0) {
                return Err(
                    candle_core::Error::Msg(format!("copy {copy}: output std {std} cannot be calibrated")).into()
                );
            }
            self.calibration[copy] = (f64::from(self.calibration[copy]) * target_std / std) as f32;
        }
        Ok(())
    }

    /// The minibatch size of `xs`/`labels`, checked against the population and the input width.
    fn check(&self, xs: &[f32], labels: &[u32]) -> Result<usize, EnsembleError> {
        let population = self.population();
        let batch = labels.len() / population.max(1);
        if batch == 0 || labels.len() != population * batch || xs.len() != population * batch * self.inputs {
            let expected = format!("[{population}, batch, {}] inputs and [{population}, batch] labels", self.inputs);
            return Err(EnsembleError::Shape {
                what: "host ensemble input",
                expected,
                got: vec![xs.len(), labels.len()],
            });
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= self.outputs) {
            let expected = format!("labels below {}", self.outputs);
            return Err(EnsembleError::Shape { what: "labels", expected, got: vec![bad as usize] });
        }
        Ok(batch)
    }
}

/// Activations of every layer (`activations[0]` is the input) and gradient buffers, reused.
#[derive(Default)]
struct Workspace {
    activations: Vec<Vec<f32>>,
    gradient: Vec<f32>,
    next: Vec<f32>,
    row: Vec<f32>,
}

fn forward(layers: &[HostLayer], params: &[f32], calibration: f32, rows: &[f32], batch: usize, work: &mut Workspace) {
    work.activations.resize(layers.len() + 2, Vec::new());
    work.activations[0].clear();
    work.activations[0].extend_from_slice(rows);
    for (index, layer) in layers.iter().enumerate() {
        let (done, rest) = work.activations.split_at_mut(index + 1);
        let (x, y) = (&done[index], &mut rest[0]);
        y.clear();
        match *layer {
            HostLayer::Linear { inputs, outputs, weight, bias } => {
                let w = &params[weight..weight + inputs * outputs];
                for sample in x.chunks_exact(inputs) {
                    for (o, row) in w.chunks_exact(inputs).enumerate() {
                        y.push(dot(row, sample) + bias.map_or(0.0, |b| params[b + o]));
                    }
                }
                debug_assert_eq!(y.len(), batch * outputs);
            }
            HostLayer::Scalar { at, fixed } => y.extend(x.iter().map(|v| v * params[at] * fixed)),
            HostLayer::Bias { at } => {
                let channels = x.len() / batch;
                y.extend(x.iter().enumerate().map(|(i, v)| v + params[at + i % channels]));
            }
            HostLayer::Scale(factor) => y.extend(x.iter().map(|v| v * factor)),
            HostLayer::LeakyRelu(slope) => y.extend(x.iter().map(|&v| if v > 0.0 { v } else { v * slope })),
            HostLayer::Identity => y.extend_from_slice(x),
        }
    }
    let last = layers.len();
    let (done, rest) = work.activations.split_at_mut(last + 1);
    rest[0].clear();
    rest[0].extend(done[last].iter().map(|v| v * calibration));
    work.activations.truncate(last + 2);
}

/// `a . b` with eight partial sums, which the compiler turns into vector instructions (a plain
/// `sum()` of f32 must keep its order and stays scalar).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Mean softmax cross-entropy of `logits` `[B, C]`; with `gradient`, writes `dL/dlogits`.
fn cross_entropy(logits: &[f32], targets: &[u32], classes: usize, mut gradient: Option<&mut Vec<f32>>) -> f64 {
    let batch = targets.len();
    if let Some(g) = gradient.as_deref_mut() {
        g.clear();
    }
    let mut total = 0.0f64;
    for (row, &target) in logits.chunks_exact(classes).zip(targets) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_sum = max + sum.ln();
        total += f64::from(log_sum - row[target as usize]);
        if let Some(g) = gradient.as_deref_mut() {
            for (c, v) in row.iter().enumerate() {
                let p = (v - log_sum).exp();
                g.push((p - if c == target as usize { 1.0 } else { 0.0 }) / batch as f32);
            }
        }
    }
    total / batch as f64
}

#[allow(clippy::too_many_arguments)]
fn train_copy(
    layers: &[HostLayer],
    params: &mut [f32],
    calibration: f32,
    rows: &[f32],
    targets: &[u32],
    classes: usize,
    learning_rate: f32,
    weight_decay: f32,
    work: &mut Workspace,
) -> f64 {
    let batch = targets.len();
    forward(layers, params, calibration, rows, batch, work);
    let mut gradient = std::mem::take(&mut work.gradient);
    let loss = cross_entropy(work.activations.last().expect("an output"), targets, classes, Some(&mut gradient));
    // Through the (detached) calibration.
    for g in gradient.iter_mut() {
        *g *= calibration;
    }
    let mut next = std::mem::take(&mut work.next);
    let mut row_gradient = std::mem::take(&mut work.row);
    let decay = |w: f32, grad: f32| w - learning_rate * (grad + weight_decay * w);
    // No layer before the first one with parameters needs a gradient: the backward pass stops
    // there, without that layer's input gradient.
    let first_with_parameters = layers
        .iter()
        .position(|l| matches!(l, HostLayer::Linear { .. } | HostLayer::Scalar { .. } | HostLayer::Bias { .. }))
        .unwrap_or(0);
    // Backward from the output; each layer's input gradient is taken before its own update, and
    // no earlier layer reads its parameters, so updating in place is plain SGD. A ReLU zeroes
    // about half the gradient: zero entries are skipped, which changes no sum.
    for (index, layer) in layers.iter().enumerate().rev().take_while(|&(index, _)| index >= first_with_parameters) {
        let x = &work.activations[index];
        next.clear();
        match *layer {
            HostLayer::Linear { inputs, outputs, weight, bias } => {
                if index > first_with_parameters {
                    next.resize(x.len(), 0.0);
                    for (dy, dx) in gradient.chunks_exact(outputs).zip(next.chunks_exact_mut(inputs)) {
                        for (o, &g) in dy.iter().enumerate().filter(|&(_, &g)| g != 0.0) {
                            let row = &params[weight + o * inputs..weight + (o + 1) * inputs];
                            for (d, w) in dx.iter_mut().zip(row) {
                                *d += g * w;
                            }
                        }
                    }
                }
                for o in 0..outputs {
                    // dW[o][i] = sum_b dy[b][o] x[b][i]
                    row_gradient.clear();
                    row_gradient.resize(inputs, 0.0);
                    for (sample, dy) in x.chunks_exact(inputs).zip(gradient.chunks_exact(outputs)) {
                        let g = dy[o];
                        if g == 0.0 {
                            continue;
                        }
                        for (r, v) in row_gradient.iter_mut().zip(sample) {
                            *r += g * v;
                        }
                    }
                    let row = &mut params[weight + o * inputs..weight + (o + 1) * inputs];
                    for (w, &r) in row.iter_mut().zip(row_gradient.iter()) {
                        *w = decay(*w, r);
                    }
                    if let Some(bias) = bias {
                        let db: f32 = gradient.chunks_exact(outputs).map(|dy| dy[o]).sum();
                        params[bias + o] = decay(params[bias + o], db);
                    }
                }
            }
            HostLayer::Scalar { at, fixed } => {
                let du: f32 = gradient.iter().zip(x).map(|(g, v)| g * v * fixed).sum();
                next.extend(gradient.iter().map(|g| g * params[at] * fixed));
                params[at] = decay(params[at], du);
            }
            HostLayer::Bias { at } => {
                let channels = x.len() / batch;
                for c in 0..channels {
                    let db: f32 = gradient.chunks_exact(channels).map(|dy| dy[c]).sum();
                    params[at + c] = decay(params[at + c], db);
                }
                next.extend_from_slice(&gradient);
            }
            HostLayer::Scale(factor) => next.extend(gradient.iter().map(|g| g * factor)),
            HostLayer::LeakyRelu(slope) => {
                next.extend(gradient.iter().zip(x).map(|(g, &v)| if v > 0.0 { *g } else { g * slope }))
            }
            HostLayer::Identity => next.extend_from_slice(&gradient),
        }
        std::mem::swap(&mut gradient, &mut next);
    }
    work.row = row_gradient;
    work.gradient = gradient;
    work.next = next;
    loss
}
