"""The tiny training run the trainer tests share: a few generated images, a small model, two short
epochs. ``TINY`` holds it as ``TrainConfig`` fields, ``TINY_ARGS`` as command-line options (without
``--epochs``, which each test sets)."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest
import torch

from msrn.engine import TrainConfig, cpu_config

TINY = dict(
    synthetic_trainval=24,
    synthetic_test=13,
    image_size=64,
    embed_dim=32,
    hidden_dim=64,
    gat_hidden_dim=32,
    label_feature_dim=32,
    batch_size=8,
    workers=0,
    epochs=2,
    max_steps_per_epoch=2,
    progress=False,
)
TINY_ARGS = [
    "--synthetic-trainval",
    "24",
    "--synthetic-test",
    "13",
    "--image-size",
    "64",
    "--embed-dim",
    "32",
    "--hidden-dim",
    "64",
    "--gat-hidden-dim",
    "32",
    "--label-feature-dim",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--max-steps-per-epoch",
    "2",
    "--no-progress",
]


def tiny_config(cache_dir, output_dir, **overrides) -> TrainConfig:
    """The CPU profile shrunk to ``TINY``, with ``overrides`` on top."""
    return cpu_config(cache_dir=str(cache_dir), output_dir=str(output_dir), **{**TINY, **overrides})


@pytest.fixture
def one_thread():
    """One torch thread for the test: the runs are tiny, and a single thread avoids OpenMP
    spin-waiting when the CPU cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REPO = pathlib.Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """The environment of a training subprocess: one OpenMP thread, gloo on the loopback interface,
    and this checkout's package."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cache_dir, output, *options, entry=("-m", "msrn", "train")) -> subprocess.CompletedProcess:
    """The tiny run (``TINY_ARGS``) in two CPU processes under ``torchrun``, writing ``output``;
    ``entry`` is what torchrun starts (``msrn train`` by default, or a script path)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *entry,
        "--cache-dir",
        str(cache_dir),
        "--output-dir",
        str(output),
        "--device",
        "cpu",
        *options,
        *TINY_ARGS,
    ]
    # Its own session, so that a timeout stops torchrun's workers too, not only torchrun.
    with subprocess.Popen(
        command,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
