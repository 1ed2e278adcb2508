//! The MPI engine: the `mpi` crate (rsmpi) over the MPI library `mpirun` belongs to (Open MPI on
//! Debian: `openmpi-bin`, `libopenmpi-dev`). Buffers travel through host memory.
//!
//! Every collective is started non-blocking and polled, so a rank that stops answering makes the
//! others fail after the launch's timeout instead of waiting forever; MPI cannot cancel a
//! collective once started, so that rank prints the error and aborts the job.

use super::{check_buffer, Collective, DistributedError, Engine, Launch};
use candle_core::{DType, Tensor};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::traits::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) struct MpiCollective {
    universe: Universe,
    rank: usize,
    world_size: usize,
    timeout: Duration,
    /// MPI is initialized with `MPI_THREAD_SERIALIZED`: one call at a time, from any thread.
    serialized: Mutex<()>,
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MpiCollective {{ rank: {}, world_size: {} }}", self.rank, self.world_size)
    }
}

impl MpiCollective {
    pub(super) fn connect(launch: &Launch) -> Result<Self, DistributedError> {
        let engine = |message: String| DistributedError::Engine { rank: launch.rank, engine: "mpi", message };
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized).ok_or_else(|| {
            engine("MPI is already initialized in this process: connect once and share the collective (an Arc)".into())
        })?;
        if threading < mpi::Threading::Serialized {
            return Err(engine(format!(
                "the MPI library offers {threading:?} threading, and scalenet needs Serialized: use an MPI \
                 built with thread support (Debian's Open MPI has it)"
            )));
        }
        let world = universe.world();
        let (rank, world_size) = (world.rank() as usize, world.size() as usize);
        if (rank, world_size) != (launch.rank, launch.world_size) {
            return Err(DistributedError::Launch(format!(
                "the environment says rank {} of {}, MPI says rank {rank} of {world_size}: launch with the mpirun \
                 of the MPI library scalenet was built against",
                launch.rank, launch.world_size
            )));
        }
        Ok(MpiCollective { universe, rank, world_size, timeout: launch.timeout, serialized: Mutex::new(()) })
    }

    /// Waits for `request`, or prints the timeout error and aborts every rank.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, what: &str) {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if start.elapsed() > self.timeout {
                let error = DistributedError::Timeout {
                    rank: self.rank,
                    what: what.to_string(),
                    seconds: self.timeout.as_secs(),
                };
                eprintln!("scalenet: {error}; aborting every rank");
                self.universe.world().abort(1);
            }
            // Poll hard for the first ~millisecond (a reduction between ready ranks), then let the
            // core go: on a machine with one core per rank, a spinning rank slows the others.
            polls += 1;
            if polls < 1000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    fn all_reduce<T: Equivalence + candle_core::WithDType + Default>(
        &self,
        buffer: &Tensor,
    ) -> Result<Tensor, DistributedError> {
        let send = buffer.to_vec1::<T>()?;
        let mut received = vec![T::default(); send.len()];
        {
            let _serialized = self.serialized.lock().expect("mpi lock poisoned");
            let world = self.universe.world();
            mpi::request::scope(|scope| {
                let request =
                    world.immediate_all_reduce_into(scope, &send[..], &mut received[..], SystemOperation::sum());
                self.wait(request, "all-reduce");
            });
        }
        Ok(Tensor::from_vec(received, buffer.dims(), buffer.device())?)
    }

    fn broadcast_from<T: Equivalence + candle_core::WithDType>(
        &self,
        buffer: &Tensor,
        root: usize,
    ) -> Result<Tensor, DistributedError> {
        let mut values = buffer.to_vec1::<T>()?;
        {
            let _serialized = self.serialized.lock().expect("mpi lock poisoned");
            let world = self.universe.world();
            let root = world.process_at_rank(root as i32);
            mpi::request::scope(|scope| {
                let request = root.immediate_broadcast_into(scope, &mut values[..]);
                self.wait(request, "broadcast");
            });
        }
        Ok(Tensor::from_vec(values, buffer.dims(), buffer.device())?)
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn engine(&self) -> Engine {
        Engine::Mpi
    }

    fn all_reduce_sum(&self, buffer: &Tensor) -> Result<Tensor, DistributedError> {
        check_buffer(buffer, "all-reduce")?;
        match buffer.dtype() {
            DType::F64 => self.all_reduce::<f64>(buffer),
            _ => self.all_reduce::<f32>(buffer),
        }
    }

    fn broadcast(&self, buffer: &Tensor, root: usize) -> Result<Tensor, DistributedError> {
        check_buffer(buffer, "broadcast")?;
        if root >= self.world_size {
            return Err(DistributedError::Mismatch(format!(
                "broadcast from rank {root} in a group of {} processes",
                self.world_size
            )));
        }
        match buffer.dtype() {
            DType::F64 => self.broadcast_from::<f64>(buffer, root),
            _ => self.broadcast_from::<f32>(buffer, root),
        }
    }

    fn barrier(&self) -> Result<(), DistributedError> {
        let _serialized = self.serialized.lock().expect("mpi lock poisoned");
        let world = self.universe.world();
        self.wait(world.immediate_barrier(), "barrier");
        Ok(())
    }
}
