//! The MPI engine: the `mpi` crate (rsmpi) over the MPI library `mpirun` belongs to (Open MPI on
//! Debian: `openmpi-bin`, `libopenmpi-dev`). Buffers travel through host memory.
//!
//! A watchdog thread times every collective: a rank that stops answering makes the others fail
//! after the launch's timeout instead of waiting forever. MPI cannot cancel a collective once
//! started, so the waiting rank prints the error and aborts its process, and `mpirun` ends the
//! job. (Polling a non-blocking collective instead costs about 4 ms per small all-reduce under
//! Open MPI 4.1 against 4 µs blocking: its non-blocking collectives progress only when polled.)

use super::{check_broadcast, check_buffer, Collective, DistributedError, Engine, Launch};
use candle_core::{DType, Tensor};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::traits::*;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub(super) struct MpiCollective {
    universe: Universe,
    rank: usize,
    world_size: usize,
    watchdog: Watchdog,
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
        let watchdog = Watchdog::start(rank, launch.timeout);
        Ok(MpiCollective { universe, rank, world_size, watchdog, serialized: Mutex::new(()) })
    }

    fn all_reduce<T: Equivalence + candle_core::WithDType + Default>(
        &self,
        buffer: &Tensor,
    ) -> Result<Tensor, DistributedError> {
        let send = buffer.to_vec1::<T>()?;
        let mut received = vec![T::default(); send.len()];
        {
            let _serialized = self.serialized.lock().expect("mpi lock poisoned");
            let _watched = self.watchdog.watch("all-reduce");
            self.universe.world().all_reduce_into(&send[..], &mut received[..], SystemOperation::sum());
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
            let _watched = self.watchdog.watch("broadcast");
            self.universe.world().process_at_rank(root as i32).broadcast_into(&mut values[..]);
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
        check_broadcast(buffer, root, self.world_size)?;
        match buffer.dtype() {
            DType::F64 => self.broadcast_from::<f64>(buffer, root),
            _ => self.broadcast_from::<f32>(buffer, root),
        }
    }

    fn barrier(&self) -> Result<(), DistributedError> {
        let _serialized = self.serialized.lock().expect("mpi lock poisoned");
        let _watched = self.watchdog.watch("barrier");
        self.universe.world().barrier();
        Ok(())
    }
}

/// The collective in progress, if any: its name and deadline.
type Watched = Mutex<Option<(&'static str, Instant)>>;

/// A thread that ends the process when a collective outlives its deadline. It calls no MPI
/// function (the library is initialized for one caller at a time), so it aborts the process;
/// `mpirun` then ends the other ranks.
struct Watchdog {
    watched: Arc<(Watched, Condvar)>,
    timeout: Duration,
}

impl Watchdog {
    fn start(rank: usize, timeout: Duration) -> Self {
        let watched: Arc<(Watched, Condvar)> = Arc::new((Mutex::new(None), Condvar::new()));
        let shared = watched.clone();
        std::thread::Builder::new()
            .name("scalenet-mpi-watchdog".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                let mut current = lock.lock().expect("watchdog lock poisoned");
                loop {
                    current = match *current {
                        None => wake.wait(current).expect("watchdog lock poisoned"),
                        Some((what, deadline)) => {
                            let now = Instant::now();
                            if now >= deadline {
                                let error = DistributedError::Timeout {
                                    rank,
                                    what: what.to_string(),
                                    seconds: timeout.as_secs(),
                                };
                                eprintln!("scalenet: {error}; aborting this process so that mpirun ends the job");
                                std::process::abort();
                            }
                            wake.wait_timeout(current, deadline - now).expect("watchdog lock poisoned").0
                        }
                    }
                }
            })
            .expect("cannot start the MPI watchdog thread");
        Watchdog { watched, timeout }
    }

    /// Times the collective `what` until the returned guard is dropped.
    fn watch(&self, what: &'static str) -> WatchGuard<'_> {
        let (lock, wake) = &*self.watched;
        *lock.lock().expect("watchdog lock poisoned") = Some((what, Instant::now() + self.timeout));
        wake.notify_one();
        WatchGuard(self)
    }
}

struct WatchGuard<'a>(&'a Watchdog);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        let (lock, wake) = &*self.0.watched;
        *lock.lock().expect("watchdog lock poisoned") = None;
        wake.notify_one();
    }
}
