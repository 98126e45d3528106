#!/usr/bin/env bash
# Run specfit on a SLURM allocation through MPI (dask-mpi):
#   rank 0 = dask scheduler, rank 1 = the pipeline (client), ranks >= 2 = dask workers.
#
#   sbatch workflows/slurm_mpi.sh configs/aia1600.yaml [more `specfit run` options]
#   sbatch --nodes=4 --ntasks-per-node=32 workflows/slurm_mpi.sh my.yaml --resume
#
# Environment knobs (all optional):
#   SPECFIT_LAUNCHER   srun (default) or mpiexec
#   SPECFIT_INTERFACE  network interface the ranks talk over, e.g. ib0 (default: hostname's)
#   SPECFIT_ENV        a command run first, e.g. "module load mpich; conda activate specfit"
#
# A killed or timed-out job resumes where it stopped: resubmit with --resume.
#SBATCH --job-name=specfit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=16
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=4G
#SBATCH --time=04:00:00
#SBATCH --output=specfit-%j.log
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch $0 CONFIG.yaml [specfit run options]" >&2
    exit 2
fi
config=$1
shift

if [[ -n "${SPECFIT_ENV:-}" ]]; then
    eval "${SPECFIT_ENV}"
fi

ntasks=${SLURM_NTASKS:-3}
if (( ntasks < 3 )); then
    echo "specfit --cluster mpi needs >= 3 MPI tasks (scheduler, client, worker); got ${ntasks}" >&2
    exit 2
fi

# dask provides the parallelism: one BLAS/numba thread per dask worker thread.
threads=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads} OPENBLAS_NUM_THREADS=${threads}
export NUMBA_NUM_THREADS=${threads}

# Each worker rank may use the memory SLURM gives its task (MB); the tile size follows from it.
overrides=(--set "cluster.threads_per_worker=${threads}")
if [[ -n "${SLURM_MEM_PER_CPU:-}" ]]; then
    overrides+=(--set "cluster.memory_limit=$(( SLURM_MEM_PER_CPU * threads ))MiB")
fi
if [[ -n "${SPECFIT_INTERFACE:-}" ]]; then
    overrides+=(--set "cluster.interface=${SPECFIT_INTERFACE}")
fi

launcher=${SPECFIT_LAUNCHER:-srun}
case "${launcher}" in
    srun) launch=(srun --ntasks="${ntasks}" --cpus-per-task="${threads}") ;;
    mpiexec) launch=(mpiexec -n "${ntasks}") ;;
    *) echo "SPECFIT_LAUNCHER must be srun or mpiexec, got ${launcher}" >&2; exit 2 ;;
esac

echo "specfit: ${ntasks} MPI tasks ($(( ntasks - 2 )) dask workers x ${threads} threads) via ${launcher}"
exec "${launch[@]}" specfit run "${config}" --cluster mpi "${overrides[@]}" "$@"
