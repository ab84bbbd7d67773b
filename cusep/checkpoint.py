"""Model directories: save, load and verify them, fetch them from the Hub, and the model registry.

A model directory follows the Hugging Face Hub convention, so one folder can be pushed to and
pulled from the Hub:

- ``config.json``: :meth:`ModelConfig.to_dict` (or :meth:`DetectorConfig.to_dict` for an
  instrument detector) plus the metadata keys ``cusep_version``, ``kind`` (``"separator"`` or
  ``"detector"``), ``training`` and ``metrics`` (free dicts);
- ``model.safetensors``: the weights (shipped ones in float16), never a pickle;
- ``README.md``: the model card.

``registry.json`` maps short names to ``{"path": "<dir relative to the registry>"}`` or
``{"repo_id": "org/name", "revision": "<40-hex commit>"}``; any entry may add ``"sha256"`` of its
``model.safetensors`` (checked at load), and the file may name a ``"default"`` model, a
default ``"detector"`` and a ``"score"`` model (the default separator of ``--score``)::

    {"default": "label-v1", "detector": "detect-v1", "score": "score-v1",
     "label-v1": {"path": "cusep-label-v1", "sha256": "..."},
     "detect-v1": {"path": "cusep-detect-v1"}}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_dir
from .errors import CusepError
from .version import __version__

if TYPE_CHECKING:  # torch is imported where a network is built or loaded, not at import:
    import torch  # `cusep models list` and `cusep --help` never need it
    from torch import nn

    from .model import (
        ConditionedUNet,
        DetectorConfig,
        InstrumentDetector,
        ModelConfig,
        NetworkConfig,
    )


CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
REGISTRY_FILE = "registry.json"
KIND = "separator"
DETECTOR_KIND = "detector"
METADATA_KEYS = ("cusep_version", "kind", "training", "metrics", "weights_sha256")

_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class ModelDir:
    """A verified model directory: its path, ``config.json``, model card and weights' sha256;
    ``source`` is ``org/name@revision`` for a Hub model (its path is a snapshot named by a
    commit hash), else empty."""

    path: Path
    config: dict
    card: str
    sha256: str
    source: str = ""

    @property
    def label(self) -> str:
        """How to name the model to a user: ``org/name@revision (commit 0123456789ab)`` for a
        Hub model, else the folder's name."""
        if not self.source:
            return self.path.name
        repo, _, revision = self.source.partition("@")
        commit = self.path.name[:12]
        return f"{repo}@{commit}" if revision == self.path.name \
            else f"{self.source} (commit {commit})"

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def kind(self) -> str:
        return self.config.get("kind", KIND)

    @property
    def model_config(self) -> ModelConfig:
        """The network's :class:`ModelConfig` (``config.json`` without the metadata keys)."""
        from .model import ModelConfig

        return self._network_config(ModelConfig, "model")

    @property
    def detector_config(self) -> DetectorConfig:
        """The detector's :class:`DetectorConfig` (``config.json`` without the metadata keys)."""
        from .model import DetectorConfig

        return self._network_config(DetectorConfig, "detector")

    def _network_config(self, cls: type, what: str) -> Any:
        data = {k: v for k, v in self.config.items() if k not in METADATA_KEYS}
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise CusepError(
                f"{self.path / CONFIG_FILE} is not a valid cusep {what} config ({exc}); "
                "re-export the model with cusep"
            ) from None


def kind_of(config: NetworkConfig) -> str:
    """``"separator"`` for a ModelConfig, ``"detector"`` for a DetectorConfig."""
    from .model import ModelConfig

    return KIND if isinstance(config, ModelConfig) else DETECTOR_KIND


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- saving


def save_model_dir(
    path: str | Path,
    model: nn.Module,
    config: NetworkConfig,
    *,
    training: dict | None = None,
    metrics: dict | None = None,
    card: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` to ``path`` atomically.

    Floating-point tensors are stored contiguous in ``dtype`` (default float16); integer
    buffers (BatchNorm's ``num_batches_tracked``) keep their dtype. An existing model directory
    is replaced; any other non-empty path is refused.
    """
    import torch
    from safetensors.torch import save_file

    dtype = torch.float16 if dtype is None else dtype
    path = Path(path)
    if path.exists() and not _replaceable(path):
        raise CusepError(f"refusing to overwrite {path}: it is not a model directory; "
                         "choose a new path or delete it")
    model = getattr(model, "_orig_mod", model)  # torch.compile
    model = getattr(model, "module", model)  # DistributedDataParallel
    state = {
        name: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().cpu())
        .contiguous()
        for name, t in model.state_dict().items()
    }
    _check_state_dict(state, config, path)
    meta = {
        **config.to_dict(),
        "cusep_version": __version__,
        "kind": kind_of(config),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    json.dumps(meta)  # not serialisable: fails before anything is written
    card_text = card if card is not None else default_card(meta)

    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        meta["weights_sha256"] = sha256_file(tmp / WEIGHTS_FILE)  # checked on every load
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(card_text, encoding="utf-8")
        for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
            (tmp / name).chmod(0o644)
    return path


def default_card(config: dict) -> str:
    """A minimal Hugging Face model card for a ``config.json`` dict."""
    if config.get("kind") == DETECTOR_KIND:
        lines = [
            "---",
            "library_name: cusep",
            "tags: [audio, audio-classification, music, instrument-recognition]",
            "---",
            "",
            "# cusep instrument detector",
            "",
            f"- classes: {', '.join(config.get('classes', ()))}",
            f"- channels: {config.get('channels')}",
            f"- threshold: {config.get('threshold')}",
            f"- cusep version: {config.get('cusep_version')}",
        ]
    else:
        lines = [
            "---",
            "library_name: cusep",
            "tags: [audio, audio-source-separation, music]",
            "---",
            "",
            "# cusep separation model",
            "",
            f"- architecture: {config.get('architecture')}",
            f"- conditioning: {config.get('conditioning')}",
            *(["- score input: the aligned notes of each instrument (needs --score)"]
              if config.get("score_input") else []),
            f"- instruments: {', '.join(config.get('instruments', ()))}",
            f"- cusep version: {config.get('cusep_version')}",
        ]
    for title in ("training", "metrics"):
        if config.get(title):
            lines += ["", f"## {title.capitalize()}", ""]
            lines += [f"- {key}: {value}" for key, value in config[title].items()]
    return "\n".join(lines) + "\n"


def _replaceable(path: Path) -> bool:
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or not any(path.iterdir()))


# -------------------------------------------------------------------------------------- loading


def load_model(
    spec: str | Path | ModelDir | None = None,
    device: str | torch.device = "cpu",
    registry: str | Path | None = None,
) -> tuple[ConditionedUNet, ModelDir]:
    """Resolve ``spec`` (see :func:`resolve_model`), build its network and load the weights.

    The weights are loaded in float32 (strict: every key and shape must match the config); the
    model is returned in eval mode on ``device``.
    """
    mdir = resolve_model(spec, registry=registry)
    if mdir.kind != KIND:
        raise CusepError(f"{mdir.path} holds a '{mdir.kind}' model, not a {KIND}; "
                         "pass a separation model")
    return _load_network(mdir, mdir.model_config, device), mdir


def load_detector(
    spec: str | Path | ModelDir | None = None,
    device: str | torch.device = "cpu",
    registry: str | Path | None = None,
) -> tuple[InstrumentDetector, ModelDir]:
    """Like :func:`load_model` for an instrument detector; ``spec=None`` is the registry's
    ``"detector"`` entry."""
    if spec is None:
        reg_path = _registry_path(registry)
        detector = _read_registry(reg_path)[1]["detector"] if reg_path else None
        if detector is None:
            raise CusepError(f"no default detector in the registry "
                             f"({reg_path or 'no registry.json found'}); pass --model DIR")
        spec = detector
    mdir = resolve_model(spec, registry=registry)
    if mdir.kind != DETECTOR_KIND:
        raise CusepError(f"{mdir.path} holds a '{mdir.kind}' model, not a {DETECTOR_KIND}; "
                         "pass an instrument detector")
    return _load_network(mdir, mdir.detector_config, device), mdir


def _load_network(mdir: ModelDir, config: NetworkConfig,
                  device: str | torch.device) -> nn.Module:
    """Build the network, load its weights in float32 (strict), eval mode, on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(mdir.weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CusepError(f"corrupt weights {mdir.weights} ({exc}); delete and re-download "
                         "or re-export the model") from None
    state = {k: t.float() if t.is_floating_point() else t for k, t in state.items()}
    _check_state_dict(state, config, mdir.path)
    from .model import build_network

    model = build_network(config)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def _check_state_dict(state: dict[str, torch.Tensor], config: NetworkConfig,
                      where: Path) -> None:
    """Raise a one-line CusepError unless ``state`` has the keys and shapes of ``config``."""
    import torch

    from .model import build_network

    with torch.device("meta"):
        expected = {k: tuple(t.shape) for k, t in build_network(config).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {expected[k]}"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or shapes):
        return
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatch", shapes)):
        if items:
            more = f", ... ({len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    raise CusepError(f"weights of {where} do not match its config ({'; '.join(problems)}); "
                     "export config and weights together with save_model_dir")


# ------------------------------------------------------------------------------------ resolving


def resolve_model(
    spec: str | Path | ModelDir | None,
    *,
    registry: str | Path | None = None,
    offline: bool | None = None,
) -> ModelDir:
    """Find and verify a model directory.

    ``spec`` is ``None`` (the registry's default), a directory, a registry short name, or a Hub
    repo id ``org/name`` / ``org/name@revision``. ``offline=None`` follows ``HF_HUB_OFFLINE``.
    A :class:`ModelDir` is already verified: it is returned as it is (its weights are not
    hashed again).
    """
    if isinstance(spec, ModelDir):
        return spec
    reg_path = _registry_path(registry)
    entries, roles = _read_registry(reg_path) if reg_path else ({}, dict.fromkeys(ROLES))
    default = roles["default"]
    if spec is None:
        if default is None:
            where = reg_path or "no registry.json found"
            raise CusepError(f"no default model in the registry ({where}); "
                             "pass a model directory or name")
        spec = default
    if isinstance(spec, Path) or Path(str(spec)).expanduser().is_dir():
        return _read_model_dir(Path(spec).expanduser(), None)
    text = str(spec)
    if text in entries:
        entry = entries[text]
        if "path" in entry:
            return _read_model_dir(reg_path.parent / entry["path"], entry.get("sha256"))
        found = _hub_snapshot(entry["repo_id"], entry["revision"], offline)
        return replace(_read_model_dir(found, entry.get("sha256")),
                       source=f"{entry['repo_id']}@{entry['revision']}")
    repo_id, _, revision = text.partition("@")
    if _REPO_ID.fullmatch(repo_id) and not Path(text).expanduser().exists():
        found = _hub_snapshot(repo_id, revision or None, offline)
        return replace(_read_model_dir(found, None), source=f"{repo_id}@{revision or 'main'}")
    if Path(text).expanduser().exists():
        raise CusepError(f"{text} is a file; pass the model directory (with {CONFIG_FILE} and "
                         f"{WEIGHTS_FILE})")
    if any(c in text for c in "/\\~") or text.startswith("."):
        raise CusepError(f"no model directory at {text}; check the path")
    known = ", ".join(sorted(entries)) or "none"
    raise CusepError(f"unknown model '{text}' (known: {known}); run `cusep models list` or pass "
                     "a model directory")


def _read_model_dir(path: Path, expected_sha: str | None) -> ModelDir:
    if not path.is_dir():
        raise CusepError(f"no model directory at {path}; check the path or the registry entry")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise CusepError(f"{path} lacks {name}; re-download or re-export the model "
                             f"(a model directory holds {', '.join(MODEL_FILES)})")
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CusepError(f"{path / CONFIG_FILE} is not valid JSON ({exc}); "
                         "re-download or re-export the model") from None
    if not isinstance(config, dict):
        raise CusepError(f"{path / CONFIG_FILE} must hold a JSON object; re-export the model")
    sha = sha256_file(path / WEIGHTS_FILE)
    for expected in (expected_sha, config.get("weights_sha256")):
        if isinstance(expected, str) and sha != expected.lower():
            raise CusepError(f"corrupt weights: sha256 of {path / WEIGHTS_FILE} is {sha}, "
                             f"expected {expected}; delete and re-download / re-export")
    card_path = path / CARD_FILE
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    return ModelDir(path=path, config=config, card=card, sha256=sha)


# ------------------------------------------------------------------------------------ the Hub


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str | None:
    """The Hub cache named by the environment now (huggingface_hub reads it only at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _hub_snapshot(repo_id: str, revision: str | None, offline: bool | None) -> Path:
    """Download (or find in the cache) the model files of a Hub repo; return the snapshot dir."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = f"{repo_id}@{revision}" if revision else repo_id
    offline = _is_offline(offline)
    cache_dir = _hub_cache_dir()
    try:
        found = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            allow_patterns=list(MODEL_FILES), library_name="cusep",
        )
    except LocalEntryNotFoundError:
        from huggingface_hub import constants

        where = cache_dir or constants.HF_HUB_CACHE
        cached = cached_revisions(Path(where), repo_id)
        if offline and cached:
            raise CusepError(f"model '{name}' is not in the Hugging Face cache ({where}) and "
                             f"HF_HUB_OFFLINE=1: the cached repo {repo_id} has no revision "
                             f"'{revision or 'main'}' (cached: {', '.join(cached)}); pass one "
                             "of those or run once online") from None
        if offline:
            raise CusepError(f"model '{name}' is not in the Hugging Face cache ({where}) and "
                             "HF_HUB_OFFLINE=1; run once online or pass a local directory"
                             ) from None
        raise CusepError(f"cannot download '{name}' from the Hugging Face Hub and it is not in "
                         f"the cache ({where}); check the network or pass a local directory"
                         ) from None
    except RevisionNotFoundError:
        raise CusepError(f"Hub repo '{repo_id}' has no revision '{revision}'; "
                         "check the revision") from None
    except RepositoryNotFoundError:
        raise CusepError(f"'{repo_id}' is neither a local directory nor a Hub repo you can "
                         "access; check the name (or log in for a private repo)") from None
    except HFValidationError as exc:
        raise CusepError(f"'{name}' is not a valid Hub repo id ({exc}); "
                         "pass a directory, a registry name or org/name[@revision]") from None
    except (HfHubHTTPError, OSError) as exc:
        raise CusepError(f"cannot fetch '{name}' from the Hugging Face Hub ({exc}); "
                         "retry or pass a local directory") from None
    return Path(found)


def cached_revisions(cache: Path, repo_id: str) -> list[str]:
    """The revisions of ``repo_id`` in a Hub cache, without the network: its refs (branches and
    tags, as ``name=commit``, the commit shortened to 12) and the other cached commits."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshots = sorted(p.name for p in (repo / "snapshots").glob("*") if p.is_dir())
    refs: dict[str, str] = {}
    for ref in sorted((repo / "refs").rglob("*")) if (repo / "refs").is_dir() else []:
        if ref.is_file():
            refs[ref.relative_to(repo / "refs").as_posix()] = ref.read_text().strip()
    named = set(refs.values())
    return [f"{name}={commit[:12]}" for name, commit in refs.items() if commit in snapshots] \
        + [commit for commit in snapshots if commit not in named]


# ----------------------------------------------------------------------------------- registry


def default_registry() -> Path | None:
    """``registry.json`` in the repository's or the installed package's ``models/``, if any."""
    package = Path(__file__).resolve().parent  # == Path(cusep.__file__).parent
    for folder in (package.parent / "models", package / "models"):
        if (folder / REGISTRY_FILE).is_file():
            return folder / REGISTRY_FILE
    return None


def _registry_path(registry: str | Path | None) -> Path | None:
    if registry is None:
        return default_registry()
    path = Path(registry).expanduser()
    if path.is_dir():
        path = path / REGISTRY_FILE
    if not path.is_file():
        raise CusepError(f"no model registry at {path}; pass a registry.json or its folder")
    return path


ROLES = ("default", "detector", "score")
"""What a registry may name besides its models: the default separator, the default detector and
the default separator of score-informed separation."""


def role_model(role: str, registry: str | Path | None = None) -> str | None:
    """The model the registry names for ``role`` (one of :data:`ROLES`); None: none named or no
    registry."""
    reg_path = _registry_path(registry)
    return _read_registry(reg_path)[1][role] if reg_path else None


def _read_registry(path: Path) -> tuple[dict[str, dict], dict[str, str | None]]:
    """-> (entries by name, the model named for each of :data:`ROLES` or None)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CusepError(f"model registry {path} is not valid JSON ({exc}); fix it") from None
    if not isinstance(data, dict):
        raise CusepError(f"model registry {path} must hold a JSON object; fix it")
    roles = {r: data.get(r) for r in ROLES}
    entries = {k: v for k, v in data.items() if k not in ROLES}
    for name, entry in entries.items():
        local = isinstance(entry, dict) and isinstance(entry.get("path"), str)
        hub = (isinstance(entry, dict) and isinstance(entry.get("repo_id"), str)
               and isinstance(entry.get("revision"), str))
        if not (local or hub):
            raise CusepError(f"registry entry '{name}' in {path} needs \"path\" or \"repo_id\" "
                             "and \"revision\"; fix the registry")
        if hub and not local and not _COMMIT.fullmatch(entry["revision"]):
            raise CusepError(f"registry entry '{name}' in {path} must pin a 40-hex commit "
                             f"revision, not '{entry['revision']}'; fix the registry")
    for role, name in roles.items():
        if name is not None and name not in entries:
            raise CusepError(f"registry {role} '{name}' in {path} is not one of its models "
                             f"({', '.join(sorted(entries)) or 'none'}); fix the registry")
    return entries, roles


def list_models(registry: str | Path | None = None) -> list[dict[str, Any]]:
    """One dict per registry entry, without downloading or hashing anything.

    Keys: ``name``, ``source`` (local path or ``org/name@revision``), ``available`` (on disk or
    in the Hub cache), ``size_mb``, ``instruments``, ``conditioning``, ``metrics``, ``default``.
    Unavailable entries have ``None`` size, instruments and conditioning.
    """
    reg_path = _registry_path(registry)
    if reg_path is None:
        return []
    entries, roles = _read_registry(reg_path)
    default = roles["default"]
    rows = []
    for name, entry in entries.items():
        if "path" in entry:
            folder: Path | None = (reg_path.parent / entry["path"]).resolve()
            source = str(folder)
        else:
            source = f"{entry['repo_id']}@{entry['revision']}"
            folder = _cached_snapshot(entry["repo_id"], entry["revision"])
        row = {"name": name, "source": source, "available": False, "size_mb": None,
               "instruments": None, "conditioning": None, "metrics": {},
               "default": name == default}
        if folder is not None and (folder / CONFIG_FILE).is_file() \
                and (folder / WEIGHTS_FILE).is_file():
            try:
                config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                config = None
            if isinstance(config, dict):
                row.update(
                    available=True,
                    size_mb=(folder / WEIGHTS_FILE).stat().st_size / 1e6,
                    instruments=list(config.get("instruments", config.get("classes", ()))),
                    conditioning=config.get("conditioning"),
                    metrics=dict(config.get("metrics") or {}),
                )
        rows.append(row)
    return rows


def _cached_snapshot(repo_id: str, revision: str) -> Path | None:
    """The cached snapshot folder of a pinned Hub revision, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=_hub_cache_dir(),
                                   revision=revision)
    return Path(found).parent if isinstance(found, str) else None


__all__ = [
    "ModelDir",
    "save_model_dir",
    "resolve_model",
    "load_model",
    "load_detector",
    "list_models",
    "sha256_file",
    "default_registry",
    "role_model",
    "default_card",
]
