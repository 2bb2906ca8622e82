#!/usr/bin/env bash
# Wait (at most $1 seconds) for what run_sweep.sh or session.sh started; print progress; exit 0 once it is all done.
dir=${SWEEP_DIR:-/tmp/sweep}
limit=${1:-540}
t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
  if grep -q '^done' "$dir/times" 2>/dev/null; then cat "$dir/times"; exit 0; fi
  sleep 15
  stage=$(awk '/^start/ {s=$2} END {print s}' "$dir/times" 2>/dev/null)
  echo "$(date +%T) $(tail -1 "$dir/times" 2>/dev/null) | $(grep -h 'tuned N=' "$dir/$stage.log" 2>/dev/null | tail -1 | cut -c1-150)"
done
cat "$dir/times"; echo "still running after $limit s"; exit 3
