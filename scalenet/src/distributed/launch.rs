//! How this process was launched, read from its environment, and the collective that follows.

use super::{Collective, DistributedError, SingleProcess};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What carries a group's collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// One process, nothing to communicate.
    SingleProcess,
    /// MPI (`mpirun`), over host memory: CPU processes on one or several nodes.
    Mpi,
    /// NCCL over GPU memory, one process per GPU.
    Nccl,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::SingleProcess => "single process",
            Engine::Mpi => "mpi",
            Engine::Nccl => "nccl",
        })
    }
}

/// How this process was started: alone, by `mpirun`, or by a launcher that sets `RANK`,
/// `WORLD_SIZE` and `LOCAL_RANK` (as `torchrun` does) for NCCL.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The engine the environment asks for.
    pub engine: Engine,
    /// This process's rank.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
    /// The rank among the processes of this node: the GPU a NCCL process uses.
    pub local_rank: usize,
    /// For NCCL: the file through which rank 0 hands the others the group's unique id.
    pub nccl_id_file: Option<std::path::PathBuf>,
    /// How long a collective may wait for the other ranks before it fails (default 300 s;
    /// `SCALENET_COLLECTIVE_TIMEOUT` in seconds).
    pub timeout: Duration,
}

/// The variables Open MPI, MPICH and other PMI launchers set: (rank, size).
const MPI_VARIABLES: [(&str, &str); 3] =
    [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"), ("PMIX_RANK", "PMIX_SIZE")];

impl Launch {
    /// A process on its own.
    pub fn single_process() -> Self {
        Launch {
            engine: Engine::SingleProcess,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            nccl_id_file: None,
            timeout: Duration::from_secs(300),
        }
    }

    /// Reads this process's environment (see [`Launch::from_vars`]).
    pub fn from_env() -> Result<Self, DistributedError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The launch that the variables `var(name)` describe:
    ///
    /// - `mpirun` (Open MPI's `OMPI_COMM_WORLD_SIZE`, or `PMI_SIZE` / `PMIX_SIZE`): MPI;
    /// - `RANK`, `WORLD_SIZE` (and `LOCAL_RANK`, default `RANK`): NCCL, the unique id passed
    ///   through the file `SCALENET_NCCL_ID_FILE`, which rank 0 creates (it must not exist yet);
    /// - neither: a single process.
    ///
    /// Both at once, or a variable that is not a number, is an error naming the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, DistributedError> {
        let number =
            |name: &str| -> Result<Option<usize>, DistributedError> {
                match var(name) {
                    None => Ok(None),
                    Some(text) => text.trim().parse().map(Some).map_err(|_| {
                        DistributedError::Launch(format!("{name}={text:?} is not a non-negative integer"))
                    }),
                }
            };
        let timeout = match var("SCALENET_COLLECTIVE_TIMEOUT") {
            None => Duration::from_secs(300),
            Some(text) => match text.trim().parse::<f64>() {
                Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Duration::from_secs_f64(seconds),
                _ => {
                    return Err(DistributedError::Launch(format!(
                        "SCALENET_COLLECTIVE_TIMEOUT={text:?} is not a positive number of seconds"
                    )))
                }
            },
        };
        let mut mpi = None;
        for (rank_name, size_name) in MPI_VARIABLES {
            if let (Some(rank), Some(size)) = (number(rank_name)?, number(size_name)?) {
                mpi = Some((rank, size, size_name));
                break;
            }
        }
        let torchrun = (number("RANK")?, number("WORLD_SIZE")?);
        let launch = match (mpi, torchrun) {
            (Some((_, _, size_name)), (Some(_), _) | (_, Some(_))) => {
                return Err(DistributedError::Launch(format!(
                    "this process was launched by mpirun ({size_name} is set) and also has RANK or WORLD_SIZE set, \
                     as a NCCL launcher sets them: launch with one engine only (unset RANK and WORLD_SIZE under \
                     mpirun)"
                )))
            }
            (Some((rank, world_size, _)), _) => {
                let local_rank = number("OMPI_COMM_WORLD_LOCAL_RANK")?.or(number("MPI_LOCALRANKID")?).unwrap_or(0);
                Launch { engine: Engine::Mpi, rank, world_size, local_rank, nccl_id_file: None, timeout }
            }
            (None, (Some(rank), Some(world_size))) => {
                let local_rank = number("LOCAL_RANK")?.unwrap_or(rank);
                let nccl_id_file = var("SCALENET_NCCL_ID_FILE").map(std::path::PathBuf::from);
                if nccl_id_file.is_none() && world_size > 1 {
                    return Err(DistributedError::Launch(
                        "RANK and WORLD_SIZE are set (a NCCL launch) but SCALENET_NCCL_ID_FILE is not: set it to \
                         the same new file path in every process (rank 0 writes the group's id there), e.g. \
                         SCALENET_NCCL_ID_FILE=$(mktemp -u)"
                            .into(),
                    ));
                }
                Launch { engine: Engine::Nccl, rank, world_size, local_rank, nccl_id_file, timeout }
            }
            (None, (Some(_), None)) => {
                return Err(DistributedError::Launch("RANK is set but WORLD_SIZE is not: set both, or neither".into()))
            }
            (None, (None, Some(_))) => {
                return Err(DistributedError::Launch("WORLD_SIZE is set but RANK is not: set both, or neither".into()))
            }
            (None, (None, None)) => Launch { timeout, ..Launch::single_process() },
        };
        if launch.world_size == 0 || launch.rank >= launch.world_size {
            return Err(DistributedError::Launch(format!(
                "rank {} in a group of {} processes: the launcher's variables are inconsistent",
                launch.rank, launch.world_size
            )));
        }
        Ok(launch)
    }

    /// Joins the group this launch describes: initializes MPI, or creates the NCCL communicator on
    /// GPU `local_rank`; a single process gets [`SingleProcess`].
    pub fn connect(&self) -> Result<Arc<dyn Collective>, DistributedError> {
        match self.engine {
            Engine::SingleProcess => Ok(Arc::new(SingleProcess)),
            #[cfg(feature = "mpi")]
            Engine::Mpi => Ok(Arc::new(super::mpi::MpiCollective::connect(self)?)),
            #[cfg(not(feature = "mpi"))]
            Engine::Mpi => Err(DistributedError::MissingFeature {
                launcher: "mpirun",
                evidence: format!("rank {} of {}", self.rank, self.world_size),
                feature: "mpi",
            }),
            #[cfg(feature = "nccl")]
            Engine::Nccl => Ok(Arc::new(super::nccl::NcclCollective::connect(self)?)),
            #[cfg(not(feature = "nccl"))]
            Engine::Nccl => Err(DistributedError::MissingFeature {
                launcher: "a NCCL launcher",
                evidence: format!("RANK={} WORLD_SIZE={}", self.rank, self.world_size),
                feature: "nccl",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch, DistributedError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn an_empty_environment_is_a_single_process() {
        let single = launch(&[]).unwrap();
        assert_eq!((single.engine, single.rank, single.world_size), (Engine::SingleProcess, 0, 1));
    }

    #[test]
    fn mpirun_variables_mean_mpi() {
        let mpi = launch(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ])
        .unwrap();
        assert_eq!((mpi.engine, mpi.rank, mpi.world_size, mpi.local_rank), (Engine::Mpi, 1, 4, 1));
        let mpich = launch(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")]).unwrap();
        assert_eq!((mpich.engine, mpich.world_size), (Engine::Mpi, 2));
    }

    #[test]
    fn torchrun_variables_mean_nccl() {
        let nccl = launch(&[("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("SCALENET_NCCL_ID_FILE", "/x")])
            .unwrap();
        assert_eq!((nccl.engine, nccl.rank, nccl.world_size, nccl.local_rank), (Engine::Nccl, 3, 8, 1));
        let error = launch(&[("RANK", "0"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(error.contains("SCALENET_NCCL_ID_FILE"), "{error}");
    }

    #[test]
    fn mixed_or_broken_launches_are_named() {
        let mixed = launch(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2"), ("RANK", "0")]);
        assert!(mixed.unwrap_err().to_string().contains("launch with one engine only"));
        let half = launch(&[("RANK", "0")]).unwrap_err().to_string();
        assert!(half.contains("WORLD_SIZE is not"), "{half}");
        let text = launch(&[("RANK", "one"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(text.contains("RANK=\"one\""), "{text}");
        let outside = launch(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")]).unwrap_err().to_string();
        assert!(outside.contains("rank 2 in a group of 2"), "{outside}");
        let timeout = launch(&[("SCALENET_COLLECTIVE_TIMEOUT", "-1")]).unwrap_err().to_string();
        assert!(timeout.contains("SCALENET_COLLECTIVE_TIMEOUT"), "{timeout}");
    }

    #[test]
    fn a_launch_without_its_feature_says_which_to_enable() {
        let mpi = launch(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")]).unwrap();
        if !cfg!(feature = "mpi") {
            let error = mpi.connect().unwrap_err().to_string();
            assert!(error.contains("--features mpi"), "{error}");
        }
        let nccl = launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap();
        if !cfg!(feature = "nccl") {
            let error = nccl.connect().unwrap_err().to_string();
            assert!(error.contains("--features nccl"), "{error}");
        }
    }
}
