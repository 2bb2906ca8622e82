#!/usr/bin/env bash
# Start a sweep in the background on the GPU host (survives the device command's end),
# logging to $SWEEP_DIR; poll it with benchmarks/poll_sweep.sh.
#   SWEEP_DIR=/tmp/sweep benchmarks/run_sweep.sh --configfile config/config.yaml benchmarks/configs/two_shapes_tp8.yaml
set -euo pipefail
dir=${SWEEP_DIR:-/tmp/sweep}
mkdir -p "$dir"
cd "$(dirname "$0")/.."
setsid bash -c "
  start=\$(date +%s.%N); echo start \$start > '$dir/times'
  snakemake --cores all --resources gpu=\${GPUS:-1} $* > '$dir/snakemake.log' 2>&1; rc=\$?
  echo end \$(date +%s.%N) rc \$rc >> '$dir/times'
" < /dev/null > /dev/null 2>&1 &
echo "sweep started, logs in $dir"
