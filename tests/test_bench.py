"""benchmarks/bench.py runs its cases (tiny sizes here; the real figures come from running the script)."""
import importlib.util
import json

from conftest import REPO_ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO_ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_workers_report_times_and_peak_memory(capsys):
    bench = load_bench()
    for case in ("sga_naive", "sga_ours"):
        bench.main(["--worker", case, "--batch", "2", "--sga-size", "6", "--embed-dim", "8",
                    "--num-classes", "5", "--num-groups", "2", "--warmup", "0", "--repeats", "2"])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["case"] == case and len(report["times"]) == 2
        assert all(t > 0 for t in report["times"]) and report["peak_mib"] >= 0


def test_worker_command_forwards_the_sizes():
    bench = load_bench()
    args = bench.parse_args(["--batch", "3", "--sga-repeats", "5", "--sgd", "loop"])
    command = bench._worker_command("sga_ours", args)
    assert command[command.index("--batch") + 1] == "3"
    assert command[command.index("--repeats") + 1] == "5"
    assert command[command.index("--sgd") + 1] == "loop"
