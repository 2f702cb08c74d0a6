#!/usr/bin/env bash
# What a GPU gives MSRN, in one command (< 8 min on one GPU); the last line is one JSON object.
#   bash benchmarks/gpu_check.sh             # needs a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run   # checks the script on the CPU (toy sizes)
# Options and details: python benchmarks/gpu_check.py --help
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/gpu_check.py" "$@"
