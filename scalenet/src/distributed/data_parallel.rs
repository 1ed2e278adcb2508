//! Gradients averaged over ranks in buckets; parameters made equal at the start; one checkpoint
//! writer.

use super::{Collective, DistributedError, Engine};
use crate::checkpoint::save_atomically;
use crate::finite::{TrainingError, TrainingWatch};
use crate::precision::{MixedPrecision, StepOutcome};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The loss of one data-parallel step: the mean over ranks (what one process would report for
/// the union of the ranks' minibatches, when they are the same size) and each rank's own.
#[derive(Debug, Clone, PartialEq)]
pub struct ReducedLoss {
    /// The mean of `by_rank`.
    pub mean: f64,
    /// Each rank's loss, by rank.
    pub by_rank: Vec<f64>,
}

impl ReducedLoss {
    /// The ranks whose own loss is NaN or infinite.
    pub fn non_finite_ranks(&self) -> Vec<usize> {
        self.by_rank.iter().enumerate().filter(|(_, l)| !l.is_finite()).map(|(rank, _)| rank).collect()
    }
}

/// Data-parallel training of the variables of one `VarMap`, as PyTorch's
/// `DistributedDataParallel`: at construction, every rank checks that it built the same
/// parameters as rank 0 (names, shapes, dtypes) and takes rank 0's values; at every step,
/// [`reduce`](Self::reduce) replaces each gradient by its mean over the ranks, the variables'
/// gradients flattened into buckets of about [`bucket_bytes`](Self::with_bucket_bytes) so that
/// a network of many small tensors costs a few collectives, not one per tensor.
///
/// candle's backward pass returns all gradients at once, so the buckets are reduced after it,
/// not while it still runs as DDP does; `docs/performance.md` measures what that costs.
#[derive(Debug)]
pub struct DataParallel {
    collective: Arc<dyn Collective>,
    /// The variables in name order: the same order on every rank.
    vars: Vec<(String, Var)>,
    /// Consecutive ranges of `vars` reduced together (one dtype and one device each).
    buckets: Vec<Range<usize>>,
    /// Time spent in [`reduce`](Self::reduce), in nanoseconds, and the number of calls.
    reducing: (AtomicU64, AtomicU64),
}

impl DataParallel {
    /// PyTorch DDP's default bucket size: 25 MiB.
    pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

    /// Data-parallel training of the variables of `varmap` over `collective`, buckets of
    /// [`DEFAULT_BUCKET_BYTES`](Self::DEFAULT_BUCKET_BYTES). Every rank must call it with the
    /// same network; the parameters are then rank 0's everywhere.
    pub fn new(collective: Arc<dyn Collective>, varmap: &VarMap) -> Result<Self, DistributedError> {
        Self::with_bucket_bytes(collective, varmap, Self::DEFAULT_BUCKET_BYTES)
    }

    /// [`new`](Self::new) with buckets of about `bucket_bytes` (a tensor larger than that is a
    /// bucket of its own).
    pub fn with_bucket_bytes(
        collective: Arc<dyn Collective>,
        varmap: &VarMap,
        bucket_bytes: usize,
    ) -> Result<Self, DistributedError> {
        let vars = crate::finite::variables(varmap);
        let buckets = buckets(&vars, bucket_bytes);
        let data_parallel = DataParallel { collective, vars, buckets, reducing: Default::default() };
        data_parallel.check_same_parameters()?;
        data_parallel.broadcast_parameters()?;
        Ok(data_parallel)
    }

    /// The group the gradients are averaged over.
    pub fn collective(&self) -> &Arc<dyn Collective> {
        &self.collective
    }

    /// The number of parameter values averaged at every step.
    pub fn value_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The number of buckets (collectives per step, besides the loss's).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// The time spent averaging gradients so far (packing, the collectives, waiting for the
    /// slowest rank, unpacking), and the number of steps it was spent on.
    pub fn reduce_time(&self) -> (Duration, u64) {
        let nanos = self.reducing.0.load(Ordering::Relaxed);
        (Duration::from_nanos(nanos), self.reducing.1.load(Ordering::Relaxed))
    }

    /// Every rank built the parameters rank 0 built, or every rank fails naming the ranks that
    /// did not (a collective over buffers of different sizes is undefined behaviour in MPI).
    fn check_same_parameters(&self) -> Result<(), DistributedError> {
        let collective = self.collective.as_ref();
        if collective.engine() == Engine::SingleProcess {
            return Ok(());
        }
        let signature = self.signature();
        let reference = collective.broadcast(&Tensor::new(&signature[..], &Device::Cpu)?, 0)?.to_vec1::<f64>()?;
        let mut flags = vec![0f64; collective.world_size()];
        flags[collective.rank()] = if reference == signature { 0.0 } else { 1.0 };
        let flags = collective.all_reduce_sum(&Tensor::new(flags, &Device::Cpu)?)?.to_vec1::<f64>()?;
        let differing: Vec<usize> = flags.iter().enumerate().filter(|(_, f)| **f != 0.0).map(|(r, _)| r).collect();
        if !differing.is_empty() {
            return Err(DistributedError::Mismatch(format!(
                "rank {}: ranks {differing:?} built other parameters than rank 0 (rank 0: {} tensors, {} values; \
                 rank {}: {} tensors, {} values, or other names, shapes or dtypes): every rank must build the same \
                 network",
                collective.rank(),
                reference[0],
                reference[1],
                collective.rank(),
                signature[0],
                signature[1],
            )));
        }
        Ok(())
    }

    /// (tensor count, value count, a hash of names, shapes and dtypes), each below 2^40 so f64
    /// carries them exactly.
    fn signature(&self) -> [f64; 3] {
        let mut description = String::new();
        for (name, var) in &self.vars {
            description.push_str(&format!("{name}:{:?}:{:?};", var.dims(), var.dtype()));
        }
        let values: usize = self.vars.iter().map(|(_, v)| v.elem_count()).sum();
        let hash = crate::init::fnv1a(description.as_bytes()) & ((1 << 40) - 1);
        [self.vars.len() as f64, (values % (1 << 40)) as f64, hash as f64]
    }

    /// Rank 0's parameter values, on every rank.
    fn broadcast_parameters(&self) -> Result<(), DistributedError> {
        if self.collective.engine() == Engine::SingleProcess {
            return Ok(());
        }
        for bucket in &self.buckets {
            let vars = &self.vars[bucket.clone()];
            let flat = flatten(vars.iter().map(|(_, v)| v.as_tensor().clone()).collect())?;
            let flat = self.collective.broadcast(&flat, 0)?;
            for ((_, var), value) in vars.iter().zip(unflatten(&flat, vars)?) {
                var.set(&value)?;
            }
        }
        Ok(())
    }

    /// Replaces every variable's gradient in `grads` by its mean over the ranks (a variable
    /// without a gradient on one rank counts as zero there), and returns the loss `loss` of this
    /// rank with the other ranks'. Every rank must call it at every step.
    pub fn reduce(&self, grads: &mut GradStore, loss: f64) -> Result<ReducedLoss, DistributedError> {
        let start = Instant::now();
        let collective = self.collective.as_ref();
        let world = collective.world_size();
        let mut by_rank = vec![0f64; world];
        by_rank[collective.rank()] = loss;
        // A launch of one process still runs the collectives, so that it tests the engine.
        if collective.engine() != Engine::SingleProcess {
            by_rank = collective.all_reduce_sum(&Tensor::new(by_rank, &Device::Cpu)?)?.to_vec1::<f64>()?;
            for bucket in &self.buckets {
                let vars = &self.vars[bucket.clone()];
                let gradients = vars
                    .iter()
                    .map(|(_, var)| match grads.get(var.as_tensor()) {
                        Some(grad) => Ok(grad.clone()),
                        None => var.zeros_like(),
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let summed = collective.all_reduce_sum(&flatten(gradients)?)?;
                let mean = (summed / world as f64)?;
                for ((_, var), grad) in vars.iter().zip(unflatten(&mean, vars)?) {
                    grads.insert(var.as_tensor(), grad);
                }
            }
        }
        let mean = by_rank.iter().sum::<f64>() / world as f64;
        self.reducing.0.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.reducing.1.fetch_add(1, Ordering::Relaxed);
        Ok(ReducedLoss { mean, by_rank })
    }

    /// `optimizer.backward_step(loss)` with the gradients averaged over the ranks; returns the
    /// mean loss. [`TrainingWatch::backward_step_data_parallel`](crate::finite::TrainingWatch::backward_step_data_parallel)
    /// does the same with anomaly detection that every rank agrees on.
    pub fn backward_step<O: Optimizer>(&self, optimizer: &mut O, loss: &Tensor) -> Result<f64, DistributedError> {
        let value = loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        let mut grads = loss.backward()?;
        let reduced = self.reduce(&mut grads, value)?;
        optimizer.step(&grads)?;
        Ok(reduced.mean)
    }
}

impl TrainingWatch {
    /// [`backward_step`](Self::backward_step) in data-parallel training: the gradients are
    /// averaged over the ranks of `data_parallel` before the checks and the update, and the loss
    /// checked and returned is the mean over the ranks. Every rank then sees the same numbers, so
    /// all ranks stop at the same step with the same error (a non-finite loss names the ranks
    /// whose own loss it was). Every rank must call it at every step.
    pub fn backward_step_data_parallel<O: Optimizer>(
        &mut self,
        optimizer: &mut O,
        varmap: &VarMap,
        loss: &Tensor,
        data_parallel: &DataParallel,
    ) -> Result<f64, TrainingError> {
        let reduce = |grads: &mut GradStore, loss: f64| -> candle_core::Result<(f64, Vec<usize>)> {
            let reduced = data_parallel.reduce(grads, loss)?;
            Ok((reduced.mean, reduced.non_finite_ranks()))
        };
        self.watched_step(optimizer, varmap, loss, Some(&reduce))
    }
}

impl<O: Optimizer> MixedPrecision<O> {
    /// Data-parallel training in mixed precision: `collective`'s [`DataParallel`] over the f32
    /// masters (every rank takes rank 0's, then writes them into its half network), so that the
    /// gradients averaged over the ranks are the unscaled f32 ones.
    pub fn data_parallel(&self, collective: Arc<dyn Collective>) -> Result<DataParallel, DistributedError> {
        let data_parallel = DataParallel::new(collective, self.masters())?;
        self.copy_masters_to_model()?;
        Ok(data_parallel)
    }

    /// [`backward_step`](Self::backward_step) in data-parallel training, with `data_parallel`
    /// made by [`Self::data_parallel`]: the unscaled gradients are averaged over the ranks before
    /// the finiteness check and the update, and the loss is the mean over the ranks, so every rank
    /// applies, skips (halving its scale) or fails at the same step; a non-finite loss names the
    /// ranks whose own loss it was. Every rank must call it at every step.
    pub fn backward_step_data_parallel(
        &mut self,
        loss: &Tensor,
        data_parallel: &DataParallel,
    ) -> Result<StepOutcome, TrainingError> {
        let reduce = |grads: &mut GradStore, loss: f64| -> candle_core::Result<(f64, Vec<usize>)> {
            let reduced = data_parallel.reduce(grads, loss)?;
            Ok((reduced.mean, reduced.non_finite_ranks()))
        };
        self.reduced_step(loss, Some(&reduce))
    }
}

/// Consecutive runs of variables of one dtype and device, each about `bucket_bytes`.
fn buckets(vars: &[(String, Var)], bucket_bytes: usize) -> Vec<Range<usize>> {
    let mut buckets = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, (_, var)) in vars.iter().enumerate() {
        let size = var.elem_count() * var.dtype().size_in_bytes();
        let breaks = index > start
            && (bytes + size > bucket_bytes
                || var.dtype() != vars[start].1.dtype()
                || !var.device().same_device(vars[start].1.device()));
        if breaks {
            buckets.push(start..index);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < vars.len() {
        buckets.push(start..vars.len());
    }
    buckets
}

/// The tensors' values end to end, as one 1-D contiguous buffer.
fn flatten(tensors: Vec<Tensor>) -> candle_core::Result<Tensor> {
    let flat: Vec<Tensor> = tensors.iter().map(|t| t.flatten_all()).collect::<candle_core::Result<_>>()?;
    Tensor::cat(&flat, 0)?.contiguous()
}

/// `flat` cut back into tensors shaped as `vars`.
fn unflatten(flat: &Tensor, vars: &[(String, Var)]) -> candle_core::Result<Vec<Tensor>> {
    let mut offset = 0;
    vars.iter()
        .map(|(_, var)| {
            let count = var.elem_count();
            let part = flat.narrow(0, offset, count)?.reshape(var.shape())?;
            offset += count;
            Ok(part)
        })
        .collect()
}

/// Rank 0 writes the variables of `varmap` to `path` ([`save_atomically`]) while the others
/// wait; every rank returns when the file is complete, or every rank returns an error (rank 0
/// the write's own). Call it on every rank at the same point of training.
pub fn save_on_rank0(
    collective: &dyn Collective,
    varmap: &VarMap,
    path: impl AsRef<Path>,
) -> Result<(), DistributedError> {
    let path = path.as_ref();
    let result = if collective.rank() == 0 { save_atomically(varmap, path).map_err(|e| e.to_string()) } else { Ok(()) };
    let failed = f64::from(u8::from(result.is_err()));
    let failed = collective.broadcast(&Tensor::new(&[failed], &Device::Cpu)?, 0)?.to_vec1::<f64>()?[0];
    match result {
        Err(error) => Err(DistributedError::Checkpoint(error)),
        Ok(()) if failed != 0.0 => Err(DistributedError::Checkpoint(format!(
            "rank 0 could not write the checkpoint {} (rank 0's error says why)",
            path.display()
        ))),
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;

    fn vars(sizes: &[(usize, DType)]) -> Vec<(String, Var)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &(n, dtype))| (format!("v{i}"), Var::zeros(n, dtype, &Device::Cpu).unwrap()))
            .collect()
    }

    #[test]
    fn buckets_fill_to_the_size_and_break_at_a_dtype() {
        let vars = vars(&[(10, DType::F32), (10, DType::F32), (30, DType::F32), (5, DType::F64), (5, DType::F64)]);
        assert_eq!(buckets(&vars, 80), [0..2, 2..3, 3..5]);
        assert_eq!(buckets(&vars, 1 << 20), [0..3, 3..5]);
        assert_eq!(buckets(&vars, 1), [0..1, 1..2, 2..3, 3..4, 4..5]);
        assert!(buckets(&[], 8).is_empty());
    }

    #[test]
    fn flatten_and_unflatten_round_trip() -> candle_core::Result<()> {
        let vars = vec![
            ("a".to_string(), Var::from_tensor(&Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((2, 3))?)?),
            ("b".to_string(), Var::from_tensor(&Tensor::arange(6f32, 10., &Device::Cpu)?)?),
        ];
        // A transposed (non-contiguous) tensor is flattened in its logical order.
        let flat = flatten(vec![vars[0].1.as_tensor().t()?, vars[1].1.as_tensor().clone()])?;
        assert_eq!(flat.to_vec1::<f32>()?, [0., 3., 1., 4., 2., 5., 6., 7., 8., 9.]);
        let parts = unflatten(&flatten(vars.iter().map(|(_, v)| v.as_tensor().clone()).collect())?, &vars)?;
        assert_eq!(parts[0].to_vec2::<f32>()?, [[0., 1., 2.], [3., 4., 5.]]);
        assert_eq!(parts[1].dims(), [4]);
        Ok(())
    }

    #[test]
    fn a_single_process_steps_as_without_data_parallel() -> Result<(), Box<dyn std::error::Error>> {
        let varmap = VarMap::new();
        let w = varmap.get(3, "w", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu)?;
        let data_parallel = DataParallel::new(Arc::new(SingleProcess), &varmap)?;
        let mut sgd = candle_nn::SGD::new(varmap.all_vars(), 0.5)?;
        let loss = (w.sqr()?.sum_all()? * 0.5)?;
        assert_eq!(data_parallel.backward_step(&mut sgd, &loss)?, 1.5);
        assert_eq!(w.to_vec1::<f32>()?, [0.5, 0.5, 0.5]);
        Ok(())
    }
}
