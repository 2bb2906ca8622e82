#!/usr/bin/env bash
# On the GPU host: start, in the background (it survives the device command's end), the full sweep,
# then its verification, then the exhaustive check; log to $SWEEP_DIR and poll with wait_sweep.sh.
#   SWEEP_DIR=/tmp/sweep GPUS=1 benchmarks/run_sweep.sh [extra snakemake args, e.g. --configfile my.yaml]
# Stages and their wall times are written to $SWEEP_DIR/times (start/end lines, one per stage).
# EXHAUSTIVE_POINTS (default tp8) picks the exhaustive check's points; "none" skips it.
set -euo pipefail
dir=${SWEEP_DIR:-/tmp/sweep}
work=${WORK_DIR:-/tmp/wf-sweep}
mkdir -p "$dir" "$work"
repo=$(cd "$(dirname "$0")/.." && pwd)
setsid bash -c "
  cd '$work'
  stage() { name=\$1; shift; echo \"start \$name \$(date +%s.%N)\" >> '$dir/times'
            \"\$@\" > '$dir/'\$name.log 2>&1; rc=\$?; echo \"end \$name \$(date +%s.%N) rc \$rc\" >> '$dir/times'; }
  stage sweep snakemake -s '$repo/Snakefile' --cores all --resources gpu=\${GPUS:-1} $*
  # the target first: after --resources (which takes several values) it would be read as a resource
  stage verify snakemake verify_all -s '$repo/Snakefile' --cores all --resources gpu=\${GPUS:-1} $*
  dev=\$(ls results | head -1)
  cd '$repo'
  if [ '${EXHAUSTIVE_POINTS:-tp8}' != none ]; then
    stage exhaustive python3 -m benchmarks.exhaustive_check --points '${EXHAUSTIVE_POINTS:-tp8}' \
      --results '$work'/results/\$dev --out '$dir/exhaustive'
  fi
  echo done >> '$dir/times'
" < /dev/null > /dev/null 2>&1 &
echo "sweep started in $work, logs in $dir"
