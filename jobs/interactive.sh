#!/bin/bash
# The gradient check in an interactive allocation: salloc asks Slurm for resources, then the
# check runs inside it as a job step (`autograd-check submit` sees the allocation and uses srun;
# no second job is queued).
#
#   jobs/interactive.sh                              # the tutorial's check
#   jobs/interactive.sh --shape 64x64 --json         # any option of `autograd-check submit`
#   SALLOC_PARTITION=short jobs/interactive.sh       # salloc reads SALLOC_* variables
#
# For an interactive shell instead, run the salloc line below without the command, then
# `autograd-check submit` (a step of the allocation) or `srun autograd-check run`.
set -euo pipefail

AUTOGRAD_CHECK=${AUTOGRAD_CHECK:-autograd-check}

# salloc options, the same as #SBATCH lines in a batch script:
#   --nodes=1 --ntasks=1   one process on one node
#   --cpus-per-task=1      one CPU is plenty for small shapes
#   --mem=1G               ALWAYS give --mem: without it the allocation may hold the whole node's
#                          memory, and any other job needing that node waits until it ends
#   --time=00:10:00        the allocation ends by itself after 10 minutes at the latest
#   --job-name=...         the name squeue shows
# shellcheck disable=SC2086  # $AUTOGRAD_CHECK may be a command with arguments
exec salloc --nodes=1 --ntasks=1 --cpus-per-task=1 --mem=1G --time=00:10:00 \
    --job-name=autograd-check-interactive \
    $AUTOGRAD_CHECK submit --wait "$@"
