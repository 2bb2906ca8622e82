#!/usr/bin/env bash
# Wait (at most $1 seconds) for a sweep started by run_sweep.sh; print progress; exit 0 when it ended.
dir=${SWEEP_DIR:-/tmp/sweep}
limit=${1:-540}
t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
  if grep -q '^end' "$dir/times" 2>/dev/null; then cat "$dir/times"; exit 0; fi
  sleep 10
  echo "$(date +%T) $(grep -c 'Finished jobid' "$dir/snakemake.log" 2>/dev/null) jobs done; $(grep -o '[0-9]* of [0-9]* steps ([0-9]*%) done' "$dir/snakemake.log" | tail -1)"
done
echo "still running after $limit s"; exit 3
