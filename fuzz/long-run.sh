#!/bin/sh
# The long structure-aware fuzzing runs of issue 13: 30 minutes per format, the four formats
# side by side, niced, under coverage. Reports go to fuzz/work/long-<format>.txt, findings to
# fuzz/work/findings/. Usage: sh fuzz/long-run.sh [seed] [minutes]
cd "$(dirname "$0")/.."
SEED=${1:-1601}
MINUTES=${2:-30}
PY=${PYTHON:-.venv/bin/python}
mkdir -p fuzz/work
run() {
  nice -n 15 "$PY" fuzz/structured_fuzz.py --format "$1" --minutes "$MINUTES" --seed "$SEED" \
    --coverage > "fuzz/work/long-$1.txt" 2>&1
}
run binary & run b32 & run ascii & run zstd & wait
