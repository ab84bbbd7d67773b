"""Visual conditioning: the paper's presets exp12..exp18 build and train a step on frames from
both layouts (Solos frames, URMP video + boxes.json); the encoder's fixes against the reference
(absent players ignored, sigmoid probabilities, frozen BatchNorm); weights; the Separator hook.

Everything is tiny: ResNet-18 without pretrained weights, 32-pixel crops, a 3-level U-Net.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from videos import tiny_visual, write_video

from cusep.config import build_config
from cusep.errors import CusepError
from cusep.train import Trainer
from cusep.visual import VisualConfig, VisualEncoder

RATE = 11025
SECONDS = 3
FPS = 25
VISUAL_PRESETS = [f"exp{n}" for n in range(12, 19)]
TINY = [
    "model.channels=[4, 8, 16]",
    "model.spectral.segment=4095",
    "mixing.segment=4095",
    "mixing.max_sources=3",
    "optim.batch_size=2",
    "optim.valid_items=2",
    "optim.valid_every=2",
    "optim.checkpoint_every=2",
    "model.visual.backbone=resnet18",
    "model.visual.weights=none",
    "model.visual.crop_size=32",
    "model.visual.feature_dim=16",
    "model.context_dim=16",
]
COLOURS = {"vn": (220, 40, 40), "vc": (40, 200, 40), "fl": (40, 40, 220)}


def _tone(freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(RATE * SECONDS) / RATE
    y = sum(np.sin(2 * np.pi * h * freq * t + rng.uniform(0, 6)) / h for h in (1, 2, 3))
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    from fractions import Fraction

    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.height, codec.width = img.shape[:2]
    codec.pix_fmt, codec.time_base = "yuvj444p", Fraction(1, FPS)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj444p")
    packets = codec.encode(frame) + codec.encode()
    path.write_bytes(bytes(packets[0]))


def _piece(root: Path, number: int, codes: list[str], video: bool) -> Path:
    import soundfile as sf

    name = f"{number:04d}_work{number}_" + "_".join(codes)
    folder = root / name
    folder.mkdir()
    for k, code in enumerate(codes):
        sf.write(folder / f"AuSep_{k + 1}_{code}_{number:04d}_work{number}.wav",
                 _tone(200.0 * (k + 1) + 30 * number, number * 10 + k), RATE)
    if video:
        cell = 48
        frames = []
        for i in range(SECONDS * FPS):
            img = np.zeros((64, cell * len(codes), 3), np.uint8)
            for k, code in enumerate(codes):
                img[:, k * cell:(k + 1) * cell] = COLOURS[code]
                img[(i * 2) % 60:(i * 2) % 60 + 4, k * cell:(k + 1) * cell] = 255  # moving bar
            frames.append(img)
        write_video(folder / f"Vid_{name}.mp4", frames)
        boxes = {"players": [{"box": [k * cell, 0, cell, 64], "instrument": code}
                             for k, code in enumerate(codes)]}
        (folder / "boxes.json").write_text(json.dumps(boxes))
    return folder


@pytest.fixture(scope="module")
def urmp_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three URMP-layout pieces with a video and boxes.json (one has two violins) and one
    without video."""
    root = tmp_path_factory.mktemp("urmp_video")
    _piece(root, 1, ["vn", "vc"], True)
    _piece(root, 2, ["vn", "fl", "vn"], True)
    _piece(root, 3, ["vc", "fl"], True)
    _piece(root, 4, ["vn", "fl"], False)
    return root


@pytest.fixture(scope="module")
def solos_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Solos layout: wav11k/<Instrument>/<id>.wav and frames/<Instrument>/<id>/NNNN.jpg (one
    recording without frames)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("solos")
    for folder, ids in {"Violin": ["v1", "v2"], "Cello": ["c1", "c2"], "Flute": ["f1"]}.items():
        (root / "wav11k" / folder).mkdir(parents=True)
        for j, ident in enumerate(ids):
            sf.write(root / "wav11k" / folder / f"{ident}.wav", _tone(220.0 + 90 * j, j), RATE)
            if folder == "Flute":
                continue  # no frames: not usable for visual training
            frames = root / "frames" / folder / ident
            frames.mkdir(parents=True)
            for i in range(1, 13):
                _write_jpeg(frames / f"{i:04d}.jpg", np.full((40, 48, 3), 30 * j + 10 * i,
                                                             np.uint8))
    return root


def _trainer(preset: str, data: Path, tmp: Path, extra: tuple[str, ...] = (),
             log=lambda s: None) -> Trainer:
    cfg = build_config(preset, [*TINY, f"data.train=['{data}']", *extra])
    return Trainer(cfg, tmp / "run", torch.device("cpu"), log=log)


# ----------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", VISUAL_PRESETS)
def test_visual_presets_build_and_train_a_step(preset: str, urmp_video: Path,
                                               tmp_path: Path) -> None:
    trainer = _trainer(preset, urmp_video, tmp_path)
    visual = trainer.config.model.visual
    assert visual is not None and visual.freeze == (visual.frames > 1)
    loss = trainer.train_step()
    assert np.isfinite(loss) and trainer.step == 1
    assert np.isfinite(trainer.validate()["valid_loss"])


def test_visual_presets_follow_the_paper() -> None:
    table = {12: ("film-encoder", 1, "max"), 13: ("film-final", 5, "lstm"),
             14: ("film-bottleneck", 5, "lstm"), 15: ("film-bottleneck", 5, "max"),
             16: ("final-multiply", 1, "max"), 17: ("film-bottleneck", 1, "max"),
             18: ("film-final", 1, "max")}
    for n, (conditioning, frames, temporal) in table.items():
        cfg = build_config(f"exp{n}")
        v = cfg.model.visual
        assert (cfg.model.conditioning, v.frames, cfg.model.context_dim) == (conditioning, frames,
                                                                             1024)
        assert v.backbone == "resnet50" and v.weights == "imagenet" and v.frame_stride == 30
        assert frames == 1 or v.temporal == temporal
        assert cfg.model.spectral.freq_scale == "linear" and cfg.model.mask == "ratio"
        assert not cfg.optim.curriculum and cfg.optim.loss == "l2"


def test_solos_frames_train_a_step(solos_frames: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    trainer = _trainer("exp12", solos_frames, tmp_path, ("data.layout=solos",),
                       log=messages.append)
    assert any("1 Solos recording(s) without frames" in m for m in messages)
    batch = trainer.train_sampler.draw(3, trainer.generator)
    assert batch.crops.shape[1:] == (2, 1, 3, 32, 32) and batch.crops.dtype == torch.uint8
    assert batch.players.all()  # mix-and-separate of two instruments: one player each
    assert np.isfinite(trainer.train_step())


def test_solos_reader(solos_frames: Path) -> None:
    from cusep.data.frames import read_solos_frames, solos_frames_dir

    audio = solos_frames / "wav11k" / "Violin" / "v2.wav"
    assert solos_frames_dir(audio) == solos_frames / "frames" / "Violin" / "v2"
    track = read_solos_frames(audio, 3.0, step=0.2, size=32)
    assert track.crops.shape == (16, 1, 3, 32, 32)
    # grid point t shows frame round(t * 25) + 1 (1-based), clamped to the 12 frames there are
    assert int(track.crops[1, 0, 0, 5, 5]) == pytest.approx(30 + 10 * 6, abs=3)
    assert int(track.crops[-1, 0, 0, 5, 5]) == pytest.approx(30 + 10 * 12, abs=3)
    assert track.at([0.0, 0.2, 9.0]).shape == (1, 3, 3, 32, 32)


def test_urmp_reader_crops_each_player(urmp_video: Path) -> None:
    from cusep.data.frames import read_piece_frames
    from cusep.data.urmp import scan_urmp

    piece = next(p for p in scan_urmp(urmp_video) if p.name.startswith("0002"))
    tracks = read_piece_frames(piece, 3.0, step=0.5, size=32)
    assert set(tracks) == {"vn", "fl"}
    assert tracks["vn"].crops.shape == (7, 2, 3, 32, 32)  # two violinists, one source
    assert tracks["fl"].crops.shape == (7, 1, 3, 32, 32)
    mean = tracks["fl"].crops[:, 0].float().mean(dim=(0, 2, 3))
    assert mean[2] > mean[0] + 50 and mean[2] > mean[1] + 50  # the flute's blue cell


def test_urmp_pieces_without_video_are_skipped_once(urmp_video: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    _trainer("exp16", urmp_video, tmp_path, log=messages.append)
    skipped = [m for m in messages if "without Vid_" in m]
    assert len(skipped) == 1 and "0004_work4_vn_fl" in skipped[0]


def test_cli_trains_a_visual_preset_on_urmp_videos(urmp_video: Path, tmp_path: Path,
                                                   cli) -> None:
    sets = [a for s in TINY for a in ("--set", s)]
    code, _, err = cli("train", tmp_path / "run", "--preset", "exp16", "--data", urmp_video,
                       "--max-steps", "2", "--no-progress", "--device", "cpu", *sets)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["visual"]


# ----------------------------------------------------------------------------------- encoder


def test_final_multiply_probabilities_are_sigmoid() -> None:
    model = tiny_visual("final-multiply").eval()
    with torch.no_grad():
        model.instrument_head.weight.zero_()
        model.instrument_head.bias.fill_(-20.0)
        model.instrument_head.bias[[0, 2]] = 20.0  # violin and cello both play
    crops = torch.randn(1, 2, 1, 3, 32, 32)
    present = torch.ones(1, 2, dtype=torch.bool)
    probs = model.instrument_probabilities(model.visual_context((crops, present)))
    assert probs[0, 0] > 0.99 and probs[0, 2] > 0.99 and probs[0].sum() < 2.01
    assert model.player_probabilities(crops).shape == (1, 2, 13)
    masks = model(torch.rand(1, 1, 512, 16), visual=(crops, present))
    assert masks[0, [1, 3, 4]].max() < 1e-6 and masks[0, 0].max() > 0.01


@pytest.mark.parametrize(("frames", "temporal"), [(1, "max"), (5, "lstm"), (5, "max")])
def test_absent_players_do_not_change_the_context(frames: int, temporal: str) -> None:
    encoder = VisualEncoder(VisualConfig(backbone="resnet18", weights="none", frames=frames,
                                         temporal=temporal, feature_dim=16, crop_size=32)).eval()
    crops = torch.randn(2, 3, frames, 3, 32, 32)
    present = torch.tensor([[True, False, True], [True, False, False]])
    with torch.no_grad():
        before = encoder(crops, present)
        changed = crops.clone()
        changed[:, 1] = torch.randn_like(changed[:, 1]) * 5  # the absent player
        changed[1, 2] = 0.0  # padding of the second item
        assert torch.equal(encoder(changed, present), before)
        changed[0, 0] += 3.0  # a present player does count
        assert not torch.allclose(encoder(changed, present), before)
        nobody = encoder(crops, torch.zeros(2, 3, dtype=torch.bool))
        assert torch.equal(nobody, torch.zeros_like(nobody))
        feats = encoder.features(crops)  # precomputed backbone features give the same context
        assert torch.allclose(encoder(feats, present), before)


def test_frozen_backbone_keeps_its_batchnorm_statistics(urmp_video: Path,
                                                        tmp_path: Path) -> None:
    encoder = VisualEncoder(VisualConfig(backbone="resnet18", weights="none", frames=5,
                                         temporal="lstm", freeze=True, feature_dim=16,
                                         crop_size=32))
    stats = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    encoder.train()
    encoder(torch.randn(2, 2, 5, 3, 32, 32) * 3 + 1, torch.ones(2, 2, dtype=torch.bool))
    assert encoder.training and encoder.lstm.training and not encoder.backbone.training
    for key, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, stats[key], rtol=0, atol=0, msg=key)

    trainer = _trainer("exp14", urmp_video, tmp_path)  # 5 frames, frozen ResNet, LSTM
    backbone = trainer.model.visual.backbone
    batch = trainer.train_sampler.draw(2, trainer.generator)
    assert batch.crops.shape[-1] == 512 and batch.crops.dim() == 4  # cached backbone features
    for bn in (m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert int(bn.num_batches_tracked) == 0  # caching the features ran it in eval mode
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}
    lstm = {k: v.clone() for k, v in trainer.model.visual.lstm.state_dict().items()}
    trainer.train_step()
    assert not backbone.training
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, stats[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(v, lstm[k])
               for k, v in trainer.model.visual.lstm.state_dict().items())


def test_finetuned_backbone_learns(urmp_video: Path, tmp_path: Path) -> None:
    trainer = _trainer("exp17", urmp_video, tmp_path, ("optim.lr=1e-2",))
    before = trainer.model.visual.backbone.conv1.weight.clone()
    trainer.train_step()
    trainer.train_step()  # the FiLM layers start at zero: the backbone moves from step 2
    assert trainer.model.visual.backbone.training
    assert not torch.equal(trainer.model.visual.backbone.conv1.weight, before)


# ----------------------------------------------------------------------------------- weights


def test_missing_imagenet_weights_give_one_line(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = build_config("exp16", [*TINY, "model.visual.weights=imagenet"])
    with pytest.raises(CusepError) as err:
        Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    message = str(err.value)
    assert "\n" not in message and "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "model.visual.weights=" in message


def test_backbone_weights_from_a_file(monkeypatch, tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(3)
    state = resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    encoder = VisualEncoder(VisualConfig(backbone="resnet18", weights=str(path)))
    encoder.load_pretrained()
    torch.testing.assert_close(encoder.backbone.conv1.weight, state["conv1.weight"])
    # the torchvision cache under TORCH_HOME is found for weights="imagenet"
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    encoder = VisualEncoder(VisualConfig(backbone="resnet18"))
    encoder.load_pretrained()
    torch.testing.assert_close(encoder.backbone.layer1[0].conv1.weight,
                               state["layer1.0.conv1.weight"])
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CusepError, match="cannot read visual weights"):
        VisualEncoder(VisualConfig(backbone="resnet18", weights=str(bad))).load_pretrained()


def test_audio_model_configs_still_load() -> None:
    from cusep.checkpoint import resolve_model

    root = Path(__file__).resolve().parents[1] / "models" / "cusep-label-v1"
    config = resolve_model(root).model_config
    assert config.visual is None and config.conditioning == "label-multiply"


# ----------------------------------------------------------------------------------- Separator


def test_separator_runs_a_visual_model(urmp_video: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from cusep.checkpoint import save_model_dir
    from cusep.data.urmp import scan_urmp
    from cusep.separate import Separator, SeparatorConfig
    from cusep.video import frame_provider, load_boxes, video_info

    model = tiny_visual("film-bottleneck", frames=5, temporal="lstm", freeze=True)
    path = save_model_dir(tmp_path / "model", model, model.config, dtype=torch.float32)
    sep = Separator(path, device="cpu", config=SeparatorConfig(precision="fp32"))
    assert sep.visual
    piece = next(p for p in scan_urmp(urmp_video) if p.name.startswith("0001"))
    mix = sum(sf.read(t.path, dtype="float32")[0] for t in piece.tracks)
    info = video_info(piece.video)
    players = load_boxes(piece.folder / "boxes.json", info.width, info.height)
    calls: list[np.ndarray] = []

    def provider(starts: np.ndarray):
        calls.append(starts)
        return frame_provider(piece.video, players, model.config.visual)(starts)

    stems = sep.separate(mix, RATE, ["vn", "vc"], visual=provider)
    assert stems["vn"].shape == mix.shape and np.isfinite(stems["vn"]).all()
    np.testing.assert_allclose(stems["vn"] + stems["vc"], mix, atol=1e-3)
    starts = np.concatenate(calls)
    assert starts[0] == 0.0 and np.all(np.diff(starts) > 0)
    crops, present = provider(np.array([0.0, 1.0]))
    assert crops.shape == (2, 2, 5, 3, 32, 32) and present.all()
    with pytest.raises(CusepError, match="video"):
        sep.separate(mix, RATE, ["vn"])  # a visual model without frames


def test_label_models_refuse_frames(tiny_model_dir, make_signal) -> None:
    from cusep.separate import Separator

    sep = Separator(tiny_model_dir, device="cpu")
    assert not sep.visual
    with pytest.raises(CusepError, match="no video frames"):
        sep.separate(make_signal(RATE, 1.0), RATE, ["vn"],
                     visual=lambda s: (torch.zeros(len(s), 1, 1, 3, 32, 32),
                                       torch.ones(len(s), 1, dtype=torch.bool)))


def test_eval_runs_a_visual_model_on_videos(urmp_video: Path, tmp_path: Path) -> None:
    """`cusep eval` feeds each piece's video + boxes.json to a visual model; a piece without
    video is skipped with the reason."""
    from cusep.checkpoint import save_model_dir
    from cusep.data.urmp import scan_urmp
    from cusep.evaluate import EvalConfig, evaluate

    model = tiny_visual("film-final")
    path = save_model_dir(tmp_path / "model", model, model.config, dtype=torch.float32)
    result = evaluate(scan_urmp(urmp_video), path, tmp_path / "eval",
                      EvalConfig(protocol="paper", precision="fp32"), device="cpu")
    assert {r["piece"] for r in result.records} == {p.name for p in scan_urmp(urmp_video)
                                                    if p.video is not None}
    assert any("boxes.json" in why for _, why in result.skipped)
    model_rows = [r for r in result.records if r["method"] not in ("irm", "mix")]
    assert model_rows and all(np.isfinite(r["si_sdr"]) for r in model_rows)
