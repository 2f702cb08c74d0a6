import subprocess
import sys

from msrn.cli import main


def test_models_lists_registered_architectures(capsys):
    assert main(["models"]) == 0
    listed = capsys.readouterr().out.split()
    assert "msrn_resnet101" in listed and "msrn_resnet18" in listed


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "models" in capsys.readouterr().out


def test_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "msrn", "models", "msrn_resnet1*"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["msrn_resnet101", "msrn_resnet18"]
