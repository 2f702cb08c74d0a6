#!/usr/bin/env bash
# The dependency floors in pyproject.toml are true: in a separate virtual environment, install the
# declared minimum of every dependency (torch and torchvision included: the oldest torch msrn supports,
# a standard PyPI build with its CUDA libraries, about 3 GB of wheels), install the project, and run the
# same test suite. Any failure fails the script. MIN_VERSIONS_VENV=DIR keeps the environment there for
# bisecting.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${MIN_VERSIONS_VENV:-}" ]]; then
    venv="$MIN_VERSIONS_VENV"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    venv="$scratch/venv"
fi

# A clean environment: nothing from the system site-packages (whose torch is the newest one).
python3 -m venv "$venv"
python="$venv/bin/python"
"$python" -m pip install --quiet --upgrade pip

# "name>=X" in [project].dependencies -> "name==X".
mapfile -t floors < <(python3 - <<'EOF'
import re, tomllib

with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
for requirement in dependencies:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*", requirement)
    if match is None:
        raise SystemExit(f"pyproject.toml: cannot read a floor from {requirement!r} (write name>=version)")
    name, version = match.groups()
    print(f"{name}=={version}")
EOF
)
echo "min_versions: ${floors[*]}"

# The project and its test extras, resolved against the floors. torch's wheel and its CUDA libraries
# are the largest download of CI: the time it takes is printed.
start=$SECONDS
"$python" -m pip install --quiet ".[dev]" "${floors[@]}"
"$python" -m pip check
echo "min_versions: installed in $((SECONDS - start)) s, environment $(du -sh "$venv" | cut -f1)"

# The environment really has the floors (pip did not resolve any of them to a newer release).
"$python" - "${floors[@]}" <<'EOF'
import sys
from importlib.metadata import version

from packaging.version import Version

pins = [pin.split("==") for pin in sys.argv[1:]]
wrong = [f"{name}=={floor} (found {version(name)})" for name, floor in pins
         if Version(version(name)) != Version(floor)]
if wrong:
    raise SystemExit(f"min_versions: not installed at the floor: {wrong}")
EOF

"$python" -m pytest -q -p no:cacheprovider
