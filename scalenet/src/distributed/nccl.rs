//! The NCCL engine: cudarc's NCCL bindings (what candle's multi-GPU examples use), one process
//! per GPU, collectives on the stream of the candle device the network lives on.
//!
//! Rank 0 creates the group's unique id and writes it to the launch's `SCALENET_NCCL_ID_FILE`
//! (through a temporary file and a rename, so no rank reads half of it); the others wait for the
//! file up to the launch's timeout.

use super::{check_broadcast, check_buffer, Collective, DistributedError, Engine, Launch};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An NCCL communicator is used by one thread at a time (NCCL's rule); the mutex sees to it.
struct SharedComm(Comm);

// SAFETY: a communicator may move between threads; NCCL only forbids concurrent use, which the
// `Mutex` around every `SharedComm` excludes.
unsafe impl Send for SharedComm {}

pub(super) struct NcclCollective {
    comm: Arc<Mutex<SharedComm>>,
    device: Device,
    rank: usize,
    world_size: usize,
}

impl std::fmt::Debug for NcclCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclCollective {{ rank: {}, world_size: {} }}", self.rank, self.world_size)
    }
}

impl NcclCollective {
    pub(super) fn connect(launch: &Launch) -> Result<Self, DistributedError> {
        let engine = |message: String| DistributedError::Engine { rank: launch.rank, engine: "nccl", message };
        let device = Device::new_cuda(launch.local_rank)?;
        let Device::Cuda(cuda) = &device else { unreachable!("new_cuda returns a CUDA device") };
        let id = match (&launch.nccl_id_file, launch.world_size) {
            (_, 1) => Id::new().map_err(|e| engine(format!("{e:?}")))?,
            (Some(file), _) if launch.rank == 0 => {
                let id = Id::new().map_err(|e| engine(format!("{e:?}")))?;
                publish_id(file, &id).map_err(engine)?;
                id
            }
            (Some(file), _) => read_id(file, launch.timeout).map_err(engine)?,
            (None, _) => return Err(DistributedError::Launch("SCALENET_NCCL_ID_FILE is not set".into())),
        };
        let comm = Comm::from_rank(cuda.cuda_stream(), launch.rank, launch.world_size, id)
            .map_err(|e| engine(format!("creating the communicator on GPU {}: {e:?}", launch.local_rank)))?;
        Ok(NcclCollective {
            comm: Arc::new(Mutex::new(SharedComm(comm))),
            device,
            rank: launch.rank,
            world_size: launch.world_size,
        })
    }

    fn apply(&self, buffer: &Tensor, operation: Operation) -> Result<Tensor, DistributedError> {
        Ok(buffer.apply_op1_no_bwd(&NcclOp { comm: self.comm.clone(), operation })?)
    }
}

fn publish_id(file: &Path, id: &Id) -> Result<(), String> {
    if file.exists() {
        return Err(format!(
            "SCALENET_NCCL_ID_FILE {} already exists (a previous run's?): remove it, or give every process of \
             this run a new path",
            file.display()
        ));
    }
    let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| format!("cannot write SCALENET_NCCL_ID_FILE {}: {e}", file.display()))
}

fn read_id(file: &Path, timeout: Duration) -> Result<Id, String> {
    let start = Instant::now();
    loop {
        match std::fs::read(file) {
            Ok(bytes) if bytes.len() == 128 => {
                let mut internal = [0 as std::ffi::c_char; 128];
                for (to, from) in internal.iter_mut().zip(bytes) {
                    *to = from as std::ffi::c_char;
                }
                return Ok(Id::uninit(internal));
            }
            Ok(bytes) => {
                return Err(format!("SCALENET_NCCL_ID_FILE {} holds {} bytes, not 128", file.display(), bytes.len()))
            }
            Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => {
                return Err(format!(
                    "rank 0 did not write SCALENET_NCCL_ID_FILE {} within {} s ({error}): is it the same path in \
                     every process, and did rank 0 start?",
                    file.display(),
                    timeout.as_secs()
                ))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Operation {
    Sum,
    Broadcast { root: usize },
}

struct NcclOp {
    comm: Arc<Mutex<SharedComm>>,
    operation: Operation,
}

impl NcclOp {
    fn run<T: CudaDType + NcclType + DeviceRepr + ValidAsZeroBits>(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let device: &CudaDevice = storage.device();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("nccl: a contiguous buffer is expected".into()))?;
        let source = storage.as_cuda_slice::<T>()?.slice(start..end);
        let mut result = device.alloc_zeros::<T>(end - start)?;
        let comm = self.comm.lock().expect("nccl lock poisoned");
        let status = match self.operation {
            Operation::Sum => comm.0.all_reduce(&source, &mut result, &ReduceOp::Sum),
            Operation::Broadcast { root } => comm.0.broadcast(Some(&source), &mut result, root as i32),
        };
        status.map_err(|e| candle_core::Error::Msg(format!("nccl: {e:?}")))?;
        Ok(CudaStorage::wrap_cuda_slice(result, device.clone()))
    }
}

impl CustomOp1 for NcclOp {
    fn name(&self) -> &'static str {
        "nccl-collective"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("nccl: the buffer is in host memory; NCCL reduces GPU buffers")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let result = match storage.dtype() {
            DType::F32 => self.run::<f32>(storage, layout)?,
            DType::F64 => self.run::<f64>(storage, layout)?,
            other => candle_core::bail!("nccl: f32 or f64 buffers are reduced, not {other:?}"),
        };
        Ok((result, layout.shape().clone()))
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn engine(&self) -> Engine {
        Engine::Nccl
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn all_reduce_sum(&self, buffer: &Tensor) -> Result<Tensor, DistributedError> {
        check_buffer(buffer, "all-reduce")?;
        // Small host-side buffers (the losses, flags) travel through this GPU.
        let on_device = buffer.to_device(&self.device)?;
        Ok(self.apply(&on_device, Operation::Sum)?.to_device(buffer.device())?)
    }

    fn broadcast(&self, buffer: &Tensor, root: usize) -> Result<Tensor, DistributedError> {
        check_broadcast(buffer, root, self.world_size)?;
        let on_device = buffer.to_device(&self.device)?;
        Ok(self.apply(&on_device, Operation::Broadcast { root })?.to_device(buffer.device())?)
    }

    fn barrier(&self) -> Result<(), DistributedError> {
        // NCCL has no barrier: an all-reduce of one value, waited for, is one.
        let one = Tensor::new(&[1f32], &self.device)?;
        self.all_reduce_sum(&one)?.to_vec1::<f32>()?;
        Ok(())
    }
}
