//! Small training helpers for classification: one epoch of minibatch steps, and accuracy.

use crate::data::ImageDataset;
use candle_core::{DType, Result, D};
use candle_nn::{loss, ModuleT, Optimizer};

/// One pass over `data` in minibatches of `batch_size` with softmax cross-entropy; calls
/// `on_step(mean loss so far)` after every step and returns the epoch's mean loss.
pub fn train_epoch<M: ModuleT + ?Sized>(
    model: &M,
    optimizer: &mut impl Optimizer,
    data: &ImageDataset,
    batch_size: usize,
    mut on_step: impl FnMut(f64),
) -> Result<f64> {
    let (mut total, mut steps) = (0.0, 0);
    for batch in data.batches(batch_size) {
        let (images, labels) = batch?;
        let loss = loss::cross_entropy(&model.forward_t(&images, true)?, &labels)?;
        optimizer.backward_step(&loss)?;
        total += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        steps += 1;
        on_step(total / steps as f64);
    }
    Ok(total / steps.max(1) as f64)
}

/// Fraction of `data` whose arg-max output is the label (evaluation mode).
pub fn accuracy<M: ModuleT + ?Sized>(model: &M, data: &ImageDataset) -> Result<f64> {
    let mut correct = 0;
    for batch in data.batches(256) {
        let (images, labels) = batch?;
        let predicted = model.forward_t(&images, false)?.argmax(D::Minus1)?;
        correct += predicted.eq(&labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?;
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}
