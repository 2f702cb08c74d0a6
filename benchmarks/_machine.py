"""What a benchmark figure depends on besides the code: the CPU's vector instructions, whether the
machine is virtual, the core count and the library versions. Each benchmark puts this in its JSON."""

import os
import platform
import shutil
import subprocess

# The instruction sets PyTorch (oneDNN, MKL) and onnxruntime (MLAS) pick their kernels by.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """The flags of :data:`CPU_FLAGS` that ``/proc/cpuinfo`` lists (empty off Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def virtualization() -> dict[str, object]:
    """``{"hypervisor": the cpuinfo flag (a virtual machine), "virt": systemd-detect-virt's answer}``.

    ``systemd-detect-virt`` names the innermost layer it sees (``docker`` for a container even on a
    VM), so both are kept; ``virt`` is ``None`` where the tool is missing."""
    hypervisor = False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            hypervisor = any(line.startswith("flags") and " hypervisor" in line for line in cpuinfo)
    except OSError:
        pass
    virt = None
    tool = shutil.which("systemd-detect-virt")
    if tool:
        result = subprocess.run([tool], capture_output=True, text=True)
        virt = result.stdout.strip() or "none"
    return {"hypervisor": hypervisor, "virt": virt}


def machine_info() -> dict[str, object]:
    import torch

    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        **virtualization(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def describe(info: dict[str, object]) -> str:
    flags = ",".join(info["cpu_flags"]) or "none of " + ",".join(CPU_FLAGS)
    vm = "VM" if info["hypervisor"] else "no hypervisor flag"
    return f"{info['cpu']} ({info['cpus']} CPUs; {flags}; {vm}; systemd-detect-virt: {info['virt']})"
