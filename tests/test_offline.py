"""Without a network, everything that asks the Hugging Face Hub for a file fails within seconds, with
one line that names the repository and says what to do offline.

The Hub is a local endpoint that cannot answer: a closed port (refused at once, as with no route or no
name resolution) or a socket that accepts and never answers (the request times out). The real Hub is
never asked. huggingface_hub reads HF_ENDPOINT and its cache folder at import, so its constants are
patched here."""

import importlib.util
import socket
import threading
import time

import huggingface_hub
import pytest
import timm
from test_hub import add_folder_as_repo, reset_hub_sessions
from tiny_training import TINY_ARGS

import msrn
from msrn.cli import main as cli_main
from msrn.data import generate_synthetic_voc

TINY = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12, num_groups=2)
BUDGET_S = 5.0  # the bound on how long a failure may take
SILENT = "/silent"  # path of the endpoint that never answers, so that a test can tell which it has


@pytest.fixture(params=["refused", "silent"])
def unreachable_hub(request, monkeypatch, tmp_path):
    """HF_ENDPOINT at a local port that cannot answer, an empty cache, offline mode off."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()
    if request.param == "refused":
        listener.close()
    else:
        # Connections are accepted and held open, never answered: a server that hangs.
        listener.listen(16)
        listener.settimeout(0.1)
        holder = threading.Thread(target=_hold_connections, args=(listener, held, stop), daemon=True)
        holder.start()
    endpoint = f"http://127.0.0.1:{port}" + (SILENT if request.param == "silent" else "")
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    # huggingface_hub before 1.0 formats download URLs with its own copy of the template
    monkeypatch.setattr(huggingface_hub.file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    # huggingface_hub 2.x first fetches a registry for its user-agent header (once per process, 3 s
    # timeout, not ours): the test measures msrn's own wait.
    if importlib.util.find_spec("huggingface_hub.utils._detect_agent") is not None:
        no_agents = {"standardEnvVars": [], "harnesses": {}}
        monkeypatch.setattr("huggingface_hub.utils._detect_agent._registry", no_agents, raising=False)
    reset_hub_sessions()  # a session cached by an earlier test in offline mode would refuse at once
    yield endpoint
    reset_hub_sessions()
    stop.set()
    if request.param != "refused":
        holder.join()
    listener.close()
    for connection in held:
        connection.close()


def _hold_connections(listener: socket.socket, held: list[socket.socket], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        held.append(connection)


def failure_of(call, *args, **kwargs) -> tuple[BaseException, float]:
    start = time.perf_counter()
    with pytest.raises(Exception) as error:
        call(*args, **kwargs)
    return error.value, time.perf_counter() - start


def assert_one_quick_line(error: BaseException, seconds: float, *needles: str) -> str:
    text = str(error)
    assert seconds < BUDGET_S, f"took {seconds:.1f} s: {text}"
    assert isinstance(error, ConnectionError), repr(error)
    assert "\n" not in text and text.startswith("Cannot reach the Hugging Face Hub at http://127.0.0.1:")
    # the local endpoint was asked, not the real Hub (whose name would not resolve here)
    assert "huggingface.co" not in text and "Name or service" not in text and "NameResolution" not in text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def test_pretrained_backbone(unreachable_hub):
    error, seconds = failure_of(msrn.create_model, "msrn_resnet18", pretrained=True, num_classes=3, **TINY)
    assert_one_quick_line(
        error,
        seconds,
        "ImageNet weights of backbone 'resnet18.tv_in1k'",
        "'timm/resnet18.tv_in1k'",
        "HF_HUB_OFFLINE=1",
        "pretrained_cfg_overlay=dict(file=PATH)",
        "--backbone-weights PATH",
        "pretrained=False",
    )
    error, seconds = failure_of(timm.create_model, "msrn_resnet18", pretrained=True, num_classes=3, **TINY)
    assert_one_quick_line(error, seconds, "'timm/resnet18.tv_in1k'")


@pytest.mark.parametrize("load", [msrn.create_model, msrn.load_model])
def test_hub_checkpoint(unreachable_hub, load):
    error, seconds = failure_of(load, "hf-hub:someone/msrn-voc")
    text = assert_one_quick_line(
        error,
        seconds,
        "config.json of Hub repository 'someone/msrn-voc'",
        "HF_HUB_OFFLINE=1",
        "local-dir:DIR",
    )
    silent = unreachable_hub.endswith(SILENT)
    assert ("allow more than 3 s with HF_HUB_ETAG_TIMEOUT" in text) == silent  # a slow network's remedy


def test_push_to_hub(unreachable_hub):
    model = msrn.create_model("msrn_custom", backbone="test_resnet", num_classes=2, **TINY)
    error, seconds = failure_of(msrn.push_to_hub, model, "someone/msrn-voc", token="hf_not_a_token")
    assert_one_quick_line(
        error, seconds, "to push to Hub repository 'someone/msrn-voc'", "msrn.save_pretrained"
    )


def test_push_to_hub_in_offline_mode(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = msrn.create_model("msrn_custom", backbone="test_resnet", num_classes=2, **TINY)
    with pytest.raises(ConnectionError, match=r"'someone/msrn-voc'.*HF_HUB_OFFLINE=1.*msrn\.save_pretrained"):
        msrn.push_to_hub(model, "someone/msrn-voc")


@pytest.mark.parametrize("unreachable_hub", ["refused"], indirect=True)
def test_a_cached_repository_loads_when_the_hub_cannot_answer(unreachable_hub, tmp_path):
    model = msrn.create_model("msrn_custom", backbone="test_resnet", num_classes=2, **TINY)
    add_folder_as_repo(tmp_path / "hf" / "hub", "someone/cached", msrn.save_pretrained(model, tmp_path / "m"))
    assert msrn.create_model("hf-hub:someone/cached").num_classes == 2


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    generate_synthetic_voc(cache / "synthetic-voc-v2-24-13-s0", 24, 13, 0)
    return cache


def test_the_trainer_with_imagenet_weights(unreachable_hub, cache_dir, tmp_path, capsys):
    argv = ["train", *TINY_ARGS, "--epochs", "1", "--cache-dir", str(cache_dir), "--pretrained"]
    start = time.perf_counter()
    code = cli_main([*argv, "--output-dir", str(tmp_path / "run")])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and seconds < BUDGET_S, (code, seconds, err)
    assert err[-1].startswith("msrn train: error: Cannot reach the Hugging Face Hub")
    assert "--backbone-weights PATH" in err[-1] and "'timm/resnet18.tv_in1k'" in err[-1]
