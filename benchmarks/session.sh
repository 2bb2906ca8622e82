#!/usr/bin/env bash
# On the GPU host: run measurement stages one after another in the background (they survive the device
# command's end); each stage's wall time goes to $DIR/times, its output to $DIR/<stage>.log. Poll with
# benchmarks/wait_sweep.sh (SWEEP_DIR=$DIR) and gather with `benchmarks/session.sh collect`.
#   DIR=/tmp/session benchmarks/session.sh STAGE...
# Stages (each in its own working directory under $WORK, results kept for later stages):
#   gpu_check    python3 -m benchmarks.gpu_check
#   smoke        a 2-point sweep of both engines with verification (benchmarks/configs/smoke_gpu.yaml)
#   cold         the default sweep (DeepSeek-V3 TP=8, 144 points), cold caches, in $WORK/default
#   sglang       in $WORK/default: engine sglang at M = 1..16 (knobs), then its verification
#   flash32      [32, 32] blocks, both engines, every batch size, then its verification (configs/flash32.yaml)
#   exh_knobs    exhaustive check of the sglang space at DeepSeek-V3 TP=8 M = 1, 4, 16 ($WORK/default)
#   verify       verification of the default sweep ($WORK/default)
#   warm         the default sweep again in $WORK/warm, compile cache copied from $WORK/default
#   exh_tp8      exhaustive check of the default space ($WORK/default)
#   cold14       the 14-shape sweep, cold caches, in $WORK/cold14
set -uo pipefail
dir=${DIR:-/tmp/session}
work=${WORK:-/tmp/wf}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir" "$work"
if [ "${1:-}" = collect ]; then
  out=${OUT:?}
  cp "$dir"/times "$out/times.txt" 2>/dev/null
  tar czf "$out/logs.tar.gz" -C "$dir" --exclude='*.tar.gz' . 2>/dev/null
  (cd "$work" && tar czf "$out/results.tar.gz" --exclude=triton_cache --exclude='*.lock' \
     */results */logs 2>/dev/null)
  (cd "$work" && tar czf "$out/compiled.tar.gz" */results/*/triton_cache/w8a8_compiled 2>/dev/null)
  ls -la "$out"; exit 0
fi
sm() { local wd=$1; shift; mkdir -p "$wd"; (cd "$wd" && snakemake -s "$repo/Snakefile" "$@"); }
stage_gpu_check() { (cd "$repo" && python3 -m benchmarks.gpu_check); }
stage_smoke() { sm "$work/smoke" --cores all --resources gpu=1 --configfile "$repo/benchmarks/configs/smoke_gpu.yaml" \
  --config engine=both && cat "$work"/smoke/results/*/verify/*/summary.txt; }
stage_cold() { sm "$work/default" --cores all --resources gpu=1; }
stage_sglang() { sm "$work/default" --cores all --resources gpu=1 --config engine=sglang 'batch_sizes=[1,2,4,8,16]' \
  && sm "$work/default" verify_all --cores all --resources gpu=1 --config engine=sglang 'batch_sizes=[1,2,4,8,16]' \
  && cat "$work"/default/results/*/verify/*/summary.txt; }
stage_flash32() { sm "$work/flash32" --cores all --resources gpu=1 --configfile "$repo/benchmarks/configs/flash32.yaml" \
  && sm "$work/flash32" verify_all --cores all --resources gpu=1 --configfile "$repo/benchmarks/configs/flash32.yaml" \
  && cat "$work"/flash32/results/*/verify/*/summary.txt; }
stage_exh_knobs() { printf 'engine: sglang\n' > "$dir/sglang.yaml"; dev=$(ls "$work/default/results" | head -1)
  (cd "$repo" && python3 -m benchmarks.exhaustive_check --points tp8small --results "$work/default/results/$dev" \
     --config "$dir/sglang.yaml" --out "$dir/exh_knobs"); }
stage_verify() { sm "$work/default" verify_all --cores all --resources gpu=1 && cat "$work"/default/results/*/verify/*/summary.txt; }
stage_warm() { dev=$(ls "$work/default/results" | head -1); mkdir -p "$work/warm/results/$dev"
  cp -r "$work/default/results/$dev/triton_cache" "$work/warm/results/$dev/" && sm "$work/warm" --cores all --resources gpu=1; }
stage_exh_tp8() { dev=$(ls "$work/default/results" | head -1)
  (cd "$repo" && python3 -m benchmarks.exhaustive_check --points tp8 --results "$work/default/results/$dev" --out "$dir/exh_tp8"); }
stage_cold14() { sm "$work/cold14" --cores all --resources gpu=1 --configfile "$repo/benchmarks/configs/deepseek_v3_tp8_14_shapes.yaml"; }
setsid bash -c "
  $(declare -f sm stage_gpu_check stage_smoke stage_cold stage_sglang stage_flash32 stage_exh_knobs stage_verify \
               stage_warm stage_exh_tp8 stage_cold14)
  repo='$repo'; work='$work'; dir='$dir'
  for s in $*; do
    echo \"start \$s \$(date +%s.%N)\" >> '$dir/times'
    stage_\$s > '$dir/'\$s.log 2>&1; rc=\$?
    echo \"end \$s \$(date +%s.%N) rc \$rc\" >> '$dir/times'
  done
  echo done >> '$dir/times'
" < /dev/null > /dev/null 2>&1 &
echo "stages $* started; logs in $dir"
