"""Reaching the Hugging Face Hub: files from the Hub or its cache, failing within seconds without a
network, with a one-line message that names the repository and file and says what to do offline.

Without a network, ``huggingface_hub`` retries a download whose file is not in the cache for about
40 s before it fails, and the message names neither the repository nor the offline options. Here a
file that is not in the cache is first asked for once, without retries and with a short timeout
(:func:`probe_timeout`); when that cannot reach the Hub the download is not tried. A file in the
cache is read from there when the Hub cannot be reached, as ``huggingface_hub`` does. No global
state of ``huggingface_hub`` is changed.
"""

import os
import sys

from huggingface_hub import constants as hub_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError  # also before huggingface_hub.errors

__all__ = [
    "PROBE_TIMEOUT",
    "offline_options",
    "hub_offline",
    "is_network_error",
    "probe_timeout",
    "check_hub_reachable",
    "hub_file",
    "unreachable_error",
]

# Seconds the first request of a download that is not in the cache may take before the Hub counts as
# unreachable (HF_HUB_ETAG_TIMEOUT, when set, is used instead).
PROBE_TIMEOUT = 3.0

PathLike = str | os.PathLike


def hub_offline() -> bool:
    """Whether Hugging Face Hub offline mode is on (``HF_HUB_OFFLINE=1``)."""
    is_offline_mode = getattr(hub_constants, "is_offline_mode", None)  # huggingface_hub >= 1.0
    return bool(is_offline_mode() if is_offline_mode is not None else hub_constants.HF_HUB_OFFLINE)


def offline_options(alternatives: str) -> str:
    """What to do offline: a filled cache with offline mode, or ``alternatives`` (e.g. a local file)."""
    return (
        f"set HF_HUB_OFFLINE=1 with a Hugging Face cache that holds the file (download it once with "
        f"network access), or {alternatives}"
    )


def probe_timeout() -> float:
    """Seconds for the first request to the Hub: ``HF_HUB_ETAG_TIMEOUT`` when set, else
    :data:`PROBE_TIMEOUT`."""
    configured = getattr(hub_constants, "HF_HUB_ETAG_TIMEOUT", None)
    default = getattr(hub_constants, "DEFAULT_ETAG_TIMEOUT", None)
    return float(configured) if configured and configured != default else PROBE_TIMEOUT


def _network_error_types() -> tuple[type[BaseException], ...]:
    # The HTTP library huggingface_hub uses (requests before 1.0, httpx after, httpx2 in 2.x) is already
    # imported by it; its transport errors are looked up, not imported.
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        library = sys.modules.get(module)
        types += [getattr(library, name) for name in names if library is not None and hasattr(library, name)]
    return tuple(types)


def is_network_error(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) means the Hub could not be reached: no
    route or name resolution, a refused connection, a timeout. An HTTP answer of the Hub is not."""
    types = _network_error_types()
    for link in _error_chain(error):
        if isinstance(link, HfHubHTTPError):
            return False
        if isinstance(link, types):
            return True
    return False


def _error_chain(error: BaseException | None):
    """``error``, then the errors it was raised from (``__cause__``, else ``__context__``), each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no answer"
    return f"{type(error).__name__}: {text[:200]}"


def _timed_out(error: BaseException | None) -> bool:
    """Whether ``error`` or an error it was raised from is a timeout (the HTTP library's or the OS's)."""
    return any(
        isinstance(link, TimeoutError) or "timeout" in type(link).__name__.lower()
        for link in _error_chain(error)
    )


def unreachable_error(
    purpose: str,
    error: BaseException,
    options: str,
    cache_dir: PathLike | None = None,
    cached: bool = True,
) -> ConnectionError:
    """The one-line error when the Hub cannot be reached ``purpose`` (e.g. "for config.json of Hub
    repository 'user/repo'"); ``options`` says what to do offline. ``cached``: the file was looked for
    in the cache (and is not there)."""
    cache = f", and it is not in the cache at {cache_dir or hub_constants.HF_HUB_CACHE}" if cached else ""
    slow = (
        f" On a network that is only slow, allow more than {probe_timeout():g} s with HF_HUB_ETAG_TIMEOUT."
        if _timed_out(error)
        else ""
    )
    return ConnectionError(
        f"Cannot reach the Hugging Face Hub at {hub_constants.ENDPOINT} {purpose} ({_reason(error)}){cache}. "
        f"Offline: {options}{slow}"
    )


def check_hub_reachable(
    repo_id: str,
    filename: str,
    purpose: str,
    options: str,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    cached: bool = True,
) -> None:
    """Ask the Hub once for ``filename`` of ``repo_id`` (no retries, :func:`probe_timeout` seconds);
    raise :func:`unreachable_error` when there is no answer. Any answer, an HTTP error included, passes."""
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=probe_timeout())
    except Exception as error:  # only network errors are reported here; the download reports others
        if is_network_error(error):
            raise unreachable_error(purpose, error, options, cache_dir, cached) from error


def hub_file(
    hub_id: str,
    filename: str,
    alternatives: str,
    cache_dir: PathLike | None = None,
    what: str | None = None,
) -> str:
    """Local path of ``filename`` in Hub repository ``hub_id`` (``owner/name[@revision]``), downloaded
    or from the cache. ``alternatives``: what else the user can do without the Hub (e.g. "give a local
    file with ..."), for the messages; ``what``: the file as the messages name it.

    Raises:
        ConnectionError: the Hub cannot be reached and the file is not in the cache (within
            :func:`probe_timeout` seconds); the message names the file and the offline options.
        FileNotFoundError: the Hub answered without the file (wrong id, revision or file name, no
            access), or offline mode is on and the file is not in the cache.
        ValueError: ``hub_id`` is not ``owner/name[@revision]``.
    """
    repo_id, _, revision = hub_id.partition("@")
    if not repo_id or "@" in revision:
        raise ValueError(f"Hub id {hub_id!r} is not of the form 'owner/name' or 'owner/name@revision'.")
    revision = revision or None
    what = what or f"{filename} of Hub repository {hub_id!r}"
    purpose = f"for {what}"
    where = cache_dir or hub_constants.HF_HUB_CACHE
    offline = hub_offline()
    options = offline_options(alternatives)
    if not offline:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if not isinstance(cached, str):
            check_hub_reachable(repo_id, filename, purpose, options, revision, cache_dir)
    try:
        return hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            library_name="msrn",
            etag_timeout=probe_timeout(),
        )
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        if is_network_error(error) and not offline:  # the Hub went away after answering the probe
            raise unreachable_error(purpose, error, options, cache_dir) from error
        if offline:
            raise FileNotFoundError(
                f"Cannot resolve {what}: Hugging Face Hub offline mode is on (HF_HUB_OFFLINE=1) and it is "
                f"not in the cache at {where}. Download it once with network access (or point HF_HUB_CACHE "
                f"at a cache that holds it), or {alternatives}"
            ) from error
        raise FileNotFoundError(
            f"Cannot resolve {what} ({_reason(error)}). Check the repository id, your network and your "
            f"access token (cache: {where})."
        ) from error
