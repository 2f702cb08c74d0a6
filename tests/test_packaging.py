"""`pip install .` must give a working package: the wheel carries every module of the source tree."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation and no dependencies: the test must not reach the network.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    wheels = list(out.glob("msrn-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_every_package_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "msrn").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    missing = sorted(source - names)
    assert not missing, f"files missing from the wheel: {missing}"


def test_wheel_declares_entry_point_and_dependencies(wheel):
    archive = zipfile.ZipFile(wheel)
    dist_info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    for requirement in ("torch", "torchvision", "timm", "huggingface_hub", "safetensors", "numpy", "pillow"):
        assert f"Requires-Dist: {requirement}" in metadata.replace("huggingface-hub", "huggingface_hub")
    entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "msrn = msrn.cli:main" in entry_points


def test_installed_wheel_imports_away_from_the_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    code = (
        "import msrn, timm, torch; "
        f"assert msrn.__file__.startswith({str(target)!r}), msrn.__file__; "
        "m = timm.create_model('msrn_resnet18', num_classes=3, embed_dim=8, hidden_dim=8); "
        "print(tuple(m(torch.randn(1, 3, 64, 64)).shape))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 3)"
