"""msrn.engine.keep_freed_memory: freed blocks are reused without page faults (checked in a subprocess,
since the setting lasts for the whole process)."""

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
