#!/usr/bin/env bash
# The full calibration behind docs/spike-calibration.md: the study's baseline at corruption rates
# 0.05 and 0.2 (10 tuning seeds, 10 reporting seeds), then every detector setting on those streams,
# the synthetic families and any real training logs in LOG_DIR (`step,loss` CSV files;
# docs/spike-calibration.md lists ours).
#   tools/spike_calibration/run.sh BUILD_DIR OUT_DIR [LOG_DIR]
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR OUT_DIR [LOG_DIR]}
out=${2:?usage: run.sh BUILD_DIR OUT_DIR [LOG_DIR]}
logs=${3:-}
mkdir -p "$out"
args=()
for rate in 0.05 0.2; do  # seeds 100-109 tune, seeds 0-9 (the study's own) report
  "$build/examples/tts_stability/tts_stability" --configs baseline --seeds 10 --first-seed 100 \
    --scenarios "p$rate" --out "$out/tune_$rate" > /dev/null 2>&1
  "$build/examples/tts_stability/tts_stability" --configs baseline --seeds 10 --scenarios "p$rate" \
    --out "$out/study_$rate" > /dev/null 2>&1
  args+=(--tune-study "p=$rate=$out/tune_$rate/steps.csv" --study "p=$rate=$out/study_$rate/steps.csv")
done
if [ -n "$logs" ]; then
  for f in "$logs"/*.csv; do args+=(--log "$(basename "$f" .csv)=$f"); done
fi
"$build/tools/spike_calibration/calibrate_spikes" --seeds 5 --steps 2000 --out "$out/result" "${args[@]}"
