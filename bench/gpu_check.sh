#!/usr/bin/env bash
# All GPU evidence in one command (issue 19): see bench/gpu_check.py's docstring and bench/README.md.
#
#   bash bench/gpu_check.sh                 # writes gpu_check.json, gpu_check.md, gpu_check.log to $OUT
#   bash bench/gpu_check.sh --out DIR       # or to DIR; other options go to bench/gpu_check.py
#   bash bench/gpu_check.sh --cpu-dry-run   # the same code paths at tiny sizes on a CPU (< 1 min)
#
# Runs from the source tree (nothing to install, nothing downloaded): python3 with torch, torchvision,
# transformers, h5py, pyarrow, scikit-learn, matplotlib, pillow, tqdm. The script's own time guard stops at
# 420 s (7 min); `timeout` is the last resort at 470 s, with everything measured until then already written.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/msa-bench/gpu-check/out}
args=("$@")
out_given=0
for ((i = 0; i < ${#args[@]}; i++)); do  # --out DIR / --out=DIR also names where the log goes
  case ${args[i]} in
    --out) out=${args[i + 1]}; out_given=1 ;;
    --out=*) out=${args[i]#--out=}; out_given=1 ;;
  esac
done
out_arg=(--out "$out")  # unless the caller named it
if [ "$out_given" = 1 ]; then out_arg=(); fi
mkdir -p "$out"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-python3}
{
  echo "# gpu_check.sh $(date -u +%FT%TZ) on $(hostname 2>/dev/null || echo unknown-host)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv 2>&1 || true
  df -h /dev/shm /tmp 2>&1 || true
} | tee "$out/gpu_check.log"
set +e
timeout --kill-after=10 470 "$python" "$repo/bench/gpu_check.py" ${out_arg[@]+"${out_arg[@]}"} "$@" 2>&1 | tee -a "$out/gpu_check.log"
rc=${PIPESTATUS[0]}
set -e
echo "gpu_check.sh: exit $rc; files in $out: $(ls "$out" | tr '\n' ' ')" | tee -a "$out/gpu_check.log"
exit "$rc"
