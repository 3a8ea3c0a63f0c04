#!/usr/bin/env bash
# A batch of odecli runs started in parallel from the shell, then one report over them.
# Every run claims its own folder (exclusive mkdir, microsecond timestamp), so parallel runs
# never share or overwrite one. The script exits non-zero when any run failed.
#
#   scripts/sweep.sh                  # 3 systems x 2 seeds, 2 runs at a time
#   JOBS=4 NITERS=2000 scripts/sweep.sh
set -u
JOBS=${JOBS:-2}                        # runs at once: keep at or below your core count
NITERS=${NITERS:-300}
OUT=${ODECLI_OUTPUTS:-outputs}/batch-$(date +%Y%m%d-%H%M%S)
export ODECLI_OUTPUTS=$OUT

failed=0
pids=()
for system in spiral lotka mlp; do
  for seed in 0 1; do
    odecli train system=$system seed=$seed train.niters=$NITERS quiet=true &
    pids+=($!)
    if (( ${#pids[@]} >= JOBS )); then           # wait for the oldest before starting more
      wait "${pids[0]}" || failed=$((failed + 1))
      pids=("${pids[@]:1}")
    fi
  done
done
for pid in "${pids[@]}"; do
  wait "$pid" || failed=$((failed + 1))
done

odecli report "$OUT" --sort extrap_error_rel
echo "$failed run(s) failed; runs and report in $OUT"
exit $(( failed > 0 ))
