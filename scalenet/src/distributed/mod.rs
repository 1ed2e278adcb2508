//! Data-parallel training over the collective engines people already run: MPI across CPU
//! processes and nodes (feature `mpi`, launched by `mpirun`), NCCL across GPUs (feature `nccl`,
//! one process per GPU, launched with a `torchrun`-like environment).
//!
//! As with PyTorch's `DistributedDataParallel`: one process per device, every process builds the
//! same network, [`DataParallel`] makes the parameters equal at the start (rank 0's are
//! broadcast) and averages the gradients of every step before the optimizer sees them, so each
//! process takes the same update as one process on the union of their minibatches;
//! [`ImageDataset::shard`](crate::data::ImageDataset::shard) gives each rank its share of an
//! epoch, and [`save_on_rank0`] writes one checkpoint for all.
//!
//! ```
//! use scalenet::candle_core::{DType, Device, Tensor};
//! use scalenet::candle_nn::{loss, ModuleT, Optimizer, VarMap};
//! use scalenet::distributed::{self, DataParallel, Launch};
//! use scalenet::finite::TrainingWatch;
//! use scalenet::optim::{ParamsSgd, Sgd};
//! use scalenet::{data::ImageDataset, network};
//!
//! network! { pub struct Mlp { input: [1, 8, 8], flatten, fc1: linear(64), relu, fc2: linear(4) } }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Under `mpirun -np 2` (feature `mpi`), two ranks; started alone, a group of one.
//! let collective = Launch::from_env()?.connect()?;
//! let device = collective.device(); // the launch's GPU under NCCL, else the CPU
//! let varmap = VarMap::new();
//! let net = Mlp::new_seeded(&varmap, DType::F32, &device, 0)?;
//! let data_parallel = DataParallel::new(collective.clone(), &varmap)?; // rank 0's weights everywhere
//! let mut sgd = Sgd::new(varmap.all_vars(), ParamsSgd::new(0.1))?;
//! let mut watch = TrainingWatch::new();
//! // 256 images of 8x8; the label is which quarter of the image is brightest.
//! let images = Tensor::randn(0f32, 1., (256, 1, 8, 8), &device)?;
//! let quarters = images.reshape((256, 2, 4, 2, 4))?.sum((2, 4))?.reshape((256, 4))?;
//! let data = ImageDataset { labels: quarters.argmax(1)?, images, classes: 4 };
//! for epoch in 0..5 {
//!     // The same shuffle on every rank, then each rank's share of it.
//!     let mine = data.shuffled(epoch)?.shard(collective.rank(), collective.world_size())?;
//!     for batch in mine.batches(32) {
//!         let (images, labels) = batch?;
//!         let loss = loss::cross_entropy(&net.forward_t(&images, true)?, &labels)?;
//!         // The loss returned is the mean over all ranks: every rank sees the same number.
//!         watch.backward_step_data_parallel(&mut sgd, &varmap, &loss, &data_parallel)?;
//!     }
//! }
//! let path = std::env::temp_dir().join(format!("mlp-{}.safetensors", std::process::id()));
//! distributed::save_on_rank0(collective.as_ref(), &varmap, &path)?; // one writer, all wait
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```
//!
//! A rank that dies takes the job down rather than leaving the others waiting: `mpirun` ends
//! every process when one exits abnormally and names it; a rank that stops answering (stuck, not
//! dead) makes the others' collective fail after [`Launch::timeout`] with an error, then the job
//! is aborted.

mod data_parallel;
mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;

pub use data_parallel::{save_on_rank0, DataParallel, ReducedLoss};
pub use launch::{Engine, Launch};

use candle_core::Tensor;
use std::fmt;

/// Why a distributed run could not start or a collective failed; each message names the
/// variable, rank or file at fault and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistributedError {
    /// The launch environment is inconsistent or incomplete.
    #[error("{0}")]
    Launch(String),
    /// The process was launched for an engine this build does not include.
    #[error("this process was launched by {launcher} ({evidence}), but scalenet was built without the `{feature}` feature: build with `--features {feature}`")]
    MissingFeature {
        /// What launched the process.
        launcher: &'static str,
        /// The environment variable that says so.
        evidence: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// A collective did not complete within the timeout: another rank stopped answering.
    #[error("rank {rank}: the {what} did not complete within {seconds} s: another rank stopped answering (killed, stuck or out of memory)")]
    Timeout {
        /// The rank that gave up.
        rank: usize,
        /// Which collective.
        what: String,
        /// The timeout.
        seconds: u64,
    },
    /// The collective engine reported an error.
    #[error("rank {rank}: {engine}: {message}")]
    Engine {
        /// The rank that saw it.
        rank: usize,
        /// `mpi` or `nccl`.
        engine: &'static str,
        /// The engine's message.
        message: String,
    },
    /// The ranks disagree about something they must share (a parameter's shape, a buffer's size).
    #[error("{0}")]
    Mismatch(String),
    /// A checkpoint could not be written (on rank 0, its own error; on the others, that rank 0
    /// failed).
    #[error("{0}")]
    Checkpoint(String),
    /// An error of candle's.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<DistributedError> for candle_core::Error {
    fn from(error: DistributedError) -> Self {
        match error {
            DistributedError::Candle(error) => error,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}

/// The collective operations data-parallel training needs, over one group of processes. Buffers
/// are 1-D contiguous tensors (f32 or f64) on the process's device; every rank calls each
/// operation in the same order with buffers of the same length.
pub trait Collective: fmt::Debug + Send + Sync {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn world_size(&self) -> usize;

    /// What carries the collectives.
    fn engine(&self) -> Engine;

    /// The device this rank computes on: GPU `LOCAL_RANK` for NCCL (build the network there),
    /// the CPU otherwise.
    fn device(&self) -> candle_core::Device {
        candle_core::Device::Cpu
    }

    /// The element-wise sum of `buffer` over all ranks, on every rank.
    fn all_reduce_sum(&self, buffer: &Tensor) -> Result<Tensor, DistributedError>;

    /// Rank `root`'s `buffer`, on every rank.
    fn broadcast(&self, buffer: &Tensor, root: usize) -> Result<Tensor, DistributedError>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), DistributedError>;
}

/// A group of one: every collective is the identity. What [`Launch::connect`] gives a process
/// started on its own, so the same training code runs with and without a launcher.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn engine(&self) -> Engine {
        Engine::SingleProcess
    }

    // The buffers are checked as the other engines check them, so code that runs alone runs
    // under a launcher.
    fn all_reduce_sum(&self, buffer: &Tensor) -> Result<Tensor, DistributedError> {
        check_buffer(buffer, "all-reduce")?;
        Ok(buffer.clone())
    }

    fn broadcast(&self, buffer: &Tensor, root: usize) -> Result<Tensor, DistributedError> {
        check_broadcast(buffer, root, 1)?;
        Ok(buffer.clone())
    }

    fn barrier(&self) -> Result<(), DistributedError> {
        Ok(())
    }
}

/// A 1-D contiguous f32 or f64 buffer, or an error naming what it is instead.
fn check_buffer(buffer: &Tensor, what: &str) -> Result<(), DistributedError> {
    if buffer.rank() != 1 || !buffer.is_contiguous() {
        return Err(DistributedError::Mismatch(format!(
            "{what}: a 1-D contiguous buffer is expected, not a tensor of shape {:?} (flatten it first)",
            buffer.dims()
        )));
    }
    if !matches!(buffer.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
        return Err(DistributedError::Mismatch(format!(
            "{what}: f32 or f64 buffers are reduced, not {:?} (convert it first)",
            buffer.dtype()
        )));
    }
    Ok(())
}

/// A buffer [`check_buffer`] accepts, broadcast from a rank of the group.
fn check_broadcast(buffer: &Tensor, root: usize, world_size: usize) -> Result<(), DistributedError> {
    check_buffer(buffer, "broadcast")?;
    if root >= world_size {
        return Err(DistributedError::Mismatch(format!(
            "broadcast from rank {root} in a group of {world_size} process(es)"
        )));
    }
    Ok(())
}
