#!/usr/bin/env bash
# The dependency floors in pyproject.toml are true: in a separate virtual environment, install the
# declared minimum of every dependency but torch/torchvision (timm, huggingface_hub, safetensors, numpy,
# pillow, tqdm) beside this machine's torch, install the project, and run the same test suite.
# Any failure fails the script. MIN_VERSIONS_VENV=DIR keeps the environment there for bisecting.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${MIN_VERSIONS_VENV:-}" ]]; then
    venv="$MIN_VERSIONS_VENV"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    venv="$scratch/venv"
fi

# torch and torchvision come from the system site-packages (the builds .ci/run installed): their
# wheels are platform builds that a floor run should not download again.
python3 -m venv --system-site-packages "$venv"
python="$venv/bin/python"

# "name>=X" in [project].dependencies -> "name==X", torch and torchvision left out.
mapfile -t floors < <(python3 - <<'EOF'
import re, tomllib

with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
for requirement in dependencies:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*", requirement)
    if match is None:
        raise SystemExit(f"pyproject.toml: cannot read a floor from {requirement!r} (write name>=version)")
    name, version = match.groups()
    if name.lower() not in ("torch", "torchvision"):
        print(f"{name}=={version}")
EOF
)
torch_versions="$(python3 -c 'import torch, torchvision as tv; print("torch", torch.__version__,
                                                                     "torchvision", tv.__version__)')"
echo "min_versions: ${floors[*]} with ${torch_versions}"

# The project and its test extras, resolved against the floors (pip installs into the environment
# older copies of system packages that need them, e.g. scipy for an old numpy).
"$python" -m pip install --quiet ".[dev]" "${floors[@]}"
"$python" -m pip check

# The environment really has the floors (not a newer copy from the system site-packages).
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
