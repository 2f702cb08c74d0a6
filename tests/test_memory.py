"""msrn.engine.keep_freed_memory: freed blocks are reused without page faults (checked in a subprocess,
since the setting lasts for the whole process)."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from msrn.engine import keep_freed_memory

applied = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, min(faults[2:]))  # the heap settles after a step or two
"""


def faults_of_a_reused_block(mode):
    code = SCRIPT.format(root=str(REPO_ROOT))
    command = [sys.executable, "-c", code, mode]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting needs glibc")
def test_freed_blocks_are_reused_without_page_faults():
    applied, kept = faults_of_a_reused_block("keep")
    _, unmapped = faults_of_a_reused_block("glibc")
    assert applied
    pages = 64 * 2**20 // 4096
    assert unmapped > pages // 2  # glibc maps the block afresh every time
    assert kept < pages // 10


def test_training_keeps_freed_memory_by_default_and_the_cli_can_opt_out():
    from msrn.cli.train import build_parser, config_from_args
    from msrn.engine import TrainConfig, cpu_config, paper_config

    assert TrainConfig().keep_freed_memory and cpu_config().keep_freed_memory
    assert paper_config().keep_freed_memory
    parser = build_parser()
    assert config_from_args(parser.parse_args([])).keep_freed_memory
    assert not config_from_args(parser.parse_args(["--no-keep-freed-memory"])).keep_freed_memory
    assert config_from_args(parser.parse_args(["--keep-freed-memory"])).keep_freed_memory


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.skipif(not pathlib.Path(JEMALLOC).is_file(), reason="libjemalloc2 is not installed")
def test_a_preloaded_allocator_is_left_alone():
    code = (
        f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from msrn.engine.memory import keep_freed_memory, preloaded_allocator\n"
        "print(preloaded_allocator(), keep_freed_memory())"
    )
    env = {**os.environ, "LD_PRELOAD": JEMALLOC}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jemalloc", "False"]


def test_predict_and_evaluate_keep_freed_memory_unless_told_not_to(monkeypatch):
    from msrn.cli import _backend_options, build_parser

    calls = []
    monkeypatch.setattr(_backend_options, "keep_freed_memory", lambda: calls.append(True))
    parser = build_parser()
    for argv in (["predict", "a.jpg", "--model", "local-dir:m"], ["evaluate", "best"]):
        _backend_options.keep_freed_memory_unless_refused(parser.parse_args(argv))
        _backend_options.keep_freed_memory_unless_refused(
            parser.parse_args([*argv, "--no-keep-freed-memory"])
        )
    assert calls == [True, True]
