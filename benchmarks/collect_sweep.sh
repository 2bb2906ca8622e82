#!/usr/bin/env bash
# Gather what run_sweep.sh produced so far into $OUT (the device tool brings back at most 8 files):
# report.txt (stage times, sweep summary, verify summary), the three stage logs, and two archives.
dir=${SWEEP_DIR:-/tmp/sweep}
work=${WORK_DIR:-/tmp/wf-sweep}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:?}
{
  echo "== stage times"; cat "$dir/times" 2>/dev/null
  start=$(awk '/^start sweep/ {print $3}' "$dir/times" 2>/dev/null)
  end=$(awk '/^end sweep/ {print $3}' "$dir/times" 2>/dev/null)
  dev=$(ls "$work/results" 2>/dev/null | head -1)
  if [ -n "$end" ]; then
    echo "== sweep summary"
    (cd "$repo" && python3 -m benchmarks.sweep_summary "$work" "$dev" "$(python3 -c "print($end - $start)")")
  fi
  echo "== verify summary"; cat "$work"/results/*/verify/*/summary.txt 2>/dev/null
  echo "== versions"; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  nproc; nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
} > "$out/report.txt" 2>&1
for s in sweep verify exhaustive; do [ -f "$dir/$s.log" ] && cp "$dir/$s.log" "$out/$s.log"; done
[ -d "$dir/exhaustive" ] && tar czf "$out/exhaustive.tar.gz" -C "$dir" exhaustive
[ -d "$work/results" ] && tar czf "$out/results.tar.gz" -C "$work" --exclude=triton_cache results logs
# each config's compile outcome and seconds (benchmarks.projection builds its costs from them)
[ -d "$work/results" ] && (cd "$work" && tar czf "$out/compiled.tar.gz" results/*/triton_cache/w8a8_compiled)
ls -la "$out"
