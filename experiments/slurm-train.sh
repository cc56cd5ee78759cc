#!/usr/bin/env bash
# Data-parallel `ibn train` under Slurm: one ibn process per GPU (or per CPU task), on any
# number of nodes. Slurm's variables become torchrun's (RANK, LOCAL_RANK, WORLD_SIZE,
# MASTER_ADDR, MASTER_PORT), which `ibn train` reads; rank 0 serves the rendezvous on the first
# node. Arguments are `ibn train`'s options, e.g.
#
#   sbatch experiments/slurm-train.sh --config experiments/my-run.ini --device cuda --sync-bn --out runs/big
#   sbatch experiments/slurm-train.sh --resume runs/big       # after a failure or a time limit
#
# The global --batch is split over all tasks and must be a multiple of their number. With
# --device cuda each process takes cuda:LOCAL_RANK (NCCL where ibn was built with it, else
# Gloo through host memory). Only rank 0 writes the run directory, but --resume reads its
# config.ini on every rank: put it on a file system all nodes see. Edit the #SBATCH lines for
# your cluster.
#SBATCH --job-name=ibn-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
set -euo pipefail
IBN=${IBN:-ibn}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# A port derived from the job id, so that two jobs sharing a node do not collide.
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
export MASTER_ADDR MASTER_PORT
export WORLD_SIZE=$SLURM_NTASKS
# --kill-on-bad-exit: a rank that fails ends the step, as `ibn train --nproc` stops its workers
# (the others also stop by themselves at their next collective, or after --dist-timeout).
exec srun --kill-on-bad-exit=1 bash -c \
  'RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} exec "$0" train "$@"' \
  "$IBN" "$@"
