"""Model directories: save/load round trips, the registry, checksums, errors, the Hub cache, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from cusep.checkpoint import (
    ModelDir,
    list_models,
    load_model,
    resolve_model,
    save_model_dir,
    sha256_file,
)
from cusep.cli import models as models_cli
from cusep.errors import CusepError
from cusep.model import ConditionedUNet, ModelConfig

REV = "0123456789abcdef0123456789abcdef01234567"
OTHER_REV = "fedcba9876543210fedcba9876543210fedcba98"


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{"channels": (4, 8, 16), "conditioning": "label-multiply", **overrides})


def trained_model(config: ModelConfig) -> ConditionedUNet:
    """A tiny network whose weights and BatchNorm statistics are not the initial ones."""
    torch.manual_seed(0)
    model = ConditionedUNet(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.train()
    for _ in range(3):
        model(*inputs(config, seed=1))
    return model.eval()


def inputs(config: ModelConfig, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A magnitude-like input (2, 1, 32, 16) and a two-instrument label vector per item."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 32, 16, generator=g)
    context = torch.zeros(2, config.context_dim)
    context[0, [0, 2]] = 1
    context[1, [1, 5]] = 1
    return x, context


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, ConditionedUNet]:
    config = tiny_config()
    model = trained_model(config)
    path = save_model_dir(tmp_path / "tiny", model, config, training={"preset": "exp01"},
                          metrics={"si_sdr": 5.25, "sdr": 6.0})
    return path, model


def write_registry(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "registry.json").write_text(json.dumps(data))
    return folder / "registry.json"


# ------------------------------------------------------------------------------ save and load


def test_fp16_round_trip_matches_within_fp16_tolerance(saved):
    path, model = saved
    loaded, mdir = load_model(path)
    assert isinstance(mdir, ModelDir) and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x, c = inputs(model.config)
    with torch.no_grad():
        ref, out = model(x, c), loaded(x, c)
    assert out.shape == (2, 13, 32, 16)
    assert (ref - out).abs().max() < 5e-3
    assert not torch.equal(ref, out)  # fp16 storage really rounded the weights


def test_fp32_round_trip_is_exact(tmp_path):
    config = tiny_config(conditioning="film-encoder")
    model = trained_model(config)
    loaded, _ = load_model(save_model_dir(tmp_path / "m", model, config, dtype=torch.float32))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x, c = inputs(config)
    with torch.no_grad():
        assert torch.equal(model(x, c), loaded(x, c))


def test_saved_files_follow_the_hub_layout(saved):
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json",
                                                       "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["kind"] == "separator" and config["cusep_version"]
    assert config["training"] == {"preset": "exp01"} and config["metrics"]["si_sdr"] == 5.25
    assert config["channels"] == [4, 8, 16] and config["spectral"]["n_fft"] == 1022
    weights = load_file(str(path / "model.safetensors"))
    assert weights.keys() == model.state_dict().keys()
    for key, value in weights.items():
        expected = torch.int64 if key.endswith("num_batches_tracked") else torch.float16
        assert value.dtype == expected, key
    assert weights["encoder.0.norm.num_batches_tracked"].item() == 3
    assert "label-multiply" in (path / "README.md").read_text()
    mdir = resolve_model(path)
    assert mdir.sha256 == sha256_file(path / "model.safetensors")
    assert mdir.sha256 == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert mdir.model_config == model.config


def test_save_replaces_a_model_dir_but_not_other_folders(tmp_path, saved):
    path, model = saved
    save_model_dir(path, model, model.config, metrics={"si_sdr": 7.0}, card="# new card\n")
    assert resolve_model(path).card == "# new card\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no temp or old dirs left behind
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(CusepError, match="refusing to overwrite"):
        save_model_dir(other, model, model.config)
    assert (other / "todo.txt").read_text() == "keep me"


def test_save_refuses_a_config_that_does_not_fit_the_model(tmp_path):
    model = trained_model(tiny_config())
    with pytest.raises(CusepError, match="do not match"):
        save_model_dir(tmp_path / "bad", model, tiny_config(channels=(4, 8, 32)))
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- registry, errors


def test_registry_short_name_default_and_checksum(tmp_path, saved):
    path, model = saved
    sha = sha256_file(path / "model.safetensors")
    registry = write_registry(tmp_path, {"default": "tiny-v1",
                                         "tiny-v1": {"path": "tiny", "sha256": sha}})
    by_name, mdir = load_model("tiny-v1", registry=registry)
    assert mdir.path == path and mdir.sha256 == sha
    assert resolve_model(None, registry=tmp_path).path == path  # folder of registry.json works
    x, c = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(by_name(x, c), load_model(path)[0](x, c))

    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF  # one byte of the last tensor
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CusepError, match=f"corrupt weights: sha256 .* expected {sha}"):
        load_model("tiny-v1", registry=registry)


def test_unknown_name_lists_known_names(tmp_path, saved):
    registry = write_registry(tmp_path, {"tiny-v1": {"path": "tiny"},
                                         "film-v1": {"repo_id": "org/film", "revision": REV}})
    with pytest.raises(CusepError, match=r"unknown model 'nope' \(known: film-v1, tiny-v1\)"):
        resolve_model("nope", registry=registry)
    with pytest.raises(CusepError, match="no default model"):
        resolve_model(None, registry=registry)
    with pytest.raises(CusepError, match="no model directory at ./missing"):
        resolve_model("./missing", registry=registry)


def test_registry_hub_entries_must_pin_a_commit(tmp_path):
    registry = write_registry(tmp_path, {"x": {"repo_id": "org/x", "revision": "main"}})
    with pytest.raises(CusepError, match="40-hex commit"):
        resolve_model("x", registry=registry)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_files(saved, missing):
    path, _ = saved
    (path / missing).unlink()
    with pytest.raises(CusepError, match=f"lacks {missing}"):
        load_model(path)


def test_config_that_does_not_match_the_weights(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "channels": [4, 8, 32]}))
    with pytest.raises(CusepError, match=r"shape mismatch: .*bottleneck.weight \(16, 8, 4, 4\)"):
        load_model(path)
    (path / "config.json").write_text(json.dumps({**config, "conditioning": "film-bottleneck"}))
    with pytest.raises(CusepError, match=r"2 missing: film_bottleneck.linear.weight"):
        load_model(path)
    (path / "config.json").write_text(json.dumps({**config, "channels": [4, 8]}))
    with pytest.raises(CusepError, match="unexpected"):
        load_model(path)
    (path / "config.json").write_text(json.dumps({**config, "hop_size": 3}))
    with pytest.raises(CusepError, match="not a valid cusep model config"):
        load_model(path)


# ------------------------------------------------------------------------------------- the Hub


def lay_out_hub_cache(cache: Path, repo_id: str, revision: str, model_dir: Path,
                      ref: str | None = "main") -> Path:
    """Store ``model_dir`` as huggingface_hub does: blobs by hash, snapshot symlinks, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in sorted(model_dir.iterdir()):
        data = file.read_bytes()
        blob = hashlib.sha256(data).hexdigest()  # LFS blobs are named by their sha256
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(revision)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, saved, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    lay_out_hub_cache(cache, "org/tiny", REV, saved[0])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_repo_loads_offline_from_the_cache(hub_cache, saved, tmp_path):
    path, model = saved
    x, c = inputs(model.config)
    with torch.no_grad():
        reference = load_model(path)[0](x, c)
    snapshot = hub_cache / "models--org--tiny" / "snapshots" / REV
    for spec in ("org/tiny", f"org/tiny@{REV}"):
        hub_model, mdir = load_model(spec)
        assert mdir.path == snapshot and mdir.config["kind"] == "separator"
        with torch.no_grad():
            assert torch.equal(hub_model(x, c), reference)

    sha = sha256_file(path / "model.safetensors")
    registry = write_registry(tmp_path / "reg", {
        "default": "hub-tiny",
        "hub-tiny": {"repo_id": "org/tiny", "revision": REV, "sha256": sha},
        "hub-bad": {"repo_id": "org/tiny", "revision": REV, "sha256": "0" * 64},
    })
    assert resolve_model(None, registry=registry).path == snapshot
    with pytest.raises(CusepError, match="corrupt weights"):
        resolve_model("hub-bad", registry=registry)


def test_hub_repo_not_cached_offline_is_a_clear_error(hub_cache):
    for spec in ("org/absent", f"org/tiny@{OTHER_REV}"):
        with pytest.raises(CusepError) as info:
            resolve_model(spec)
        message = str(info.value)
        assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
        assert spec in message and "\n" not in message


def test_hub_offline_argument_overrides_the_environment(hub_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_model(f"org/tiny@{REV}", offline=True).path.name == REV


# --------------------------------------------------------------------------------- listing, CLI


def test_list_models_and_cli(tmp_path, saved, hub_cache):
    path, _ = saved
    registry = write_registry(tmp_path / "reg", {
        "default": "tiny-v1",
        "tiny-v1": {"path": os.path.relpath(path, tmp_path / "reg")},
        "hub-tiny": {"repo_id": "org/tiny", "revision": REV},
        "hub-absent": {"repo_id": "org/absent", "revision": OTHER_REV},
    })
    rows = {row["name"]: row for row in list_models(registry)}
    size = (path / "model.safetensors").stat().st_size / 1e6
    assert rows["tiny-v1"]["default"] and not rows["hub-tiny"]["default"]
    assert rows["tiny-v1"]["source"] == str(path.resolve())
    assert rows["tiny-v1"]["size_mb"] == pytest.approx(size)
    assert rows["tiny-v1"]["instruments"][:3] == ["vn", "va", "vc"]
    assert rows["tiny-v1"]["conditioning"] == "label-multiply"
    assert rows["tiny-v1"]["metrics"] == {"si_sdr": 5.25, "sdr": 6.0}
    assert rows["hub-tiny"]["source"] == f"org/tiny@{REV}" and rows["hub-tiny"]["available"]
    assert rows["hub-tiny"]["size_mb"] == pytest.approx(size)
    assert not rows["hub-absent"]["available"] and rows["hub-absent"]["size_mb"] is None

    app = typer.Typer()
    models_cli.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["models", "list", "--registry", str(registry)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("tiny-v1 *", "hub-tiny", "org/tiny@0123456", "label-multiply", "all 13",
                 "si_sdr=5.25", "not cached"):
        assert text in result.output, text
    result = runner.invoke(app, ["models", "list", "--registry", str(registry), "--json"])
    assert result.exit_code == 0
    assert {row["name"] for row in json.loads(result.output)} == set(rows)


def test_model_dir_weights_are_verified_against_the_stored_checksum(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    assert config["weights_sha256"] == sha256_file(path / "model.safetensors")
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # one flipped byte inside a tensor: loads, but is not what was exported
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CusepError, match="corrupt weights"):
        load_model(path)


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("channels", "abc", "'channels' must be a list"),
    ("dropout", "x", "'dropout' must be a number"),
    ("conditioning", 3, "is not a valid cusep model config"),
    ("spectral", {"n_fft": 0}, "n_fft must be even and at least 16"),
])
def test_config_with_nonsense_values_is_one_line(saved, key, value, needle):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(CusepError, match=re.escape(needle)):
        load_model(path)
