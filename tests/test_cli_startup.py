"""Start-up and help: ``--help``, ``--version``, ``models list`` and argument errors run without
importing torch (nor matplotlib or the metrics), and the help shows real choices, no misleading
type tags, and the instrument codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from cusep.cli import options

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchaudio", "matplotlib", "scipy", "cusep.metrics", "cusep.evaluate",
         "cusep.audio", "cusep.separate")

LIGHT_RUNS = [
    ["--help"],
    ["--version"],
    ["version"],
    ["models", "list"],
    ["models", "list", "--json"],
    ["separate", "--help"],
    ["detect", "-h"],
    ["eval", "urmp", "--help"],
    ["eval", "compare", "--help"],
    ["train", "--help"],
    ["separate", "x.wav", "-i", "vn", "--format", "ogg"],  # a value not among the choices
    ["separate", "x.wav", "-i", "vn", "--device", "tpu"],
    ["separate", "x.wav", "--no-such-option"],
    ["eval", "synth", "data", "--protocol", "half"],
    ["separate", "x.wav"],  # no --instruments: cusep's own check, before anything loads
    ["separate", "x.wav", "-i", "vn", "--overlay", "o.mp4"],
]

_PROBE = """
import json, sys
from cusep.cli import main
heavy, found = json.loads(sys.argv[1]), {}
for args in json.loads(sys.argv[2]):
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    found[" ".join(args)] = [code, [m for m in heavy if m in sys.modules]]
print("PROBE" + json.dumps(found))
"""


def test_light_commands_never_import_torch():
    """One fresh interpreter runs every light command in turn (main is re-entrant) and lists
    the heavy modules loaded after each."""
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(HEAVY),
                           json.dumps(LIGHT_RUNS)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout[proc.stdout.rindex("PROBE") + 5:])
    for args in LIGHT_RUNS:
        code, loaded = found[" ".join(args)]
        assert loaded == [], (args, loaded)
        if "--help" in args or "-h" in args or args[0] in ("--version", "version", "models"):
            assert code in (0, None), (args, code)
        else:
            assert code == 1, (args, code)  # an error line, like every cusep error
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 6  # one line per bad command line
    assert errors[0] == ("error: unknown --format 'ogg'; one of wav16, wav24, float32, flac, "
                         "flac24, mp3, wav")
    assert "unknown device 'tpu'; use auto, cpu, cuda or cuda:N" in errors[1]
    assert "--no-such-option" in errors[2] and "see 'cusep separate --help'" in errors[2]
    assert errors[3] == "error: unknown --protocol 'half'; one of paper, full"
    assert "name the instruments with --instruments" in errors[4]
    assert "--overlay needs --boxes" in errors[5]


def test_import_cusep_is_light_and_the_api_loads_on_use():
    code = ("import sys, cusep; light = 'torch' not in sys.modules; "
            "f = cusep.separate; import cusep.separate as m; "
            "print(light, callable(f), cusep.separate is f, 'torch' in sys.modules, "
            "cusep.Separator.__name__, sorted(cusep.__all__) == cusep.__all__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.stdout.split() == ["True", "True", "True", "True", "Separator", "True"], \
        proc.stderr


def test_cli_constants_are_the_library_values():
    """The choices and defaults shown before torch loads are exactly the library's."""
    from cusep.audio import FORMAT_EXTENSIONS, MP3_BITRATES
    from cusep.config import DataConfig
    from cusep.evaluate import REFERENCE_METHODS
    from cusep.runtime import Precision
    from cusep.separate import SeparatorConfig

    assert options.FORMATS == tuple(FORMAT_EXTENSIONS)
    assert options.MP3_BITRATES == MP3_BITRATES
    assert typing.get_args(options.Format) == tuple(FORMAT_EXTENSIONS)
    assert typing.get_args(options.Precision) == typing.get_args(Precision)
    assert typing.get_args(options.Layout) == typing.get_args(
        typing.get_type_hints(DataConfig)["layout"])
    config = SeparatorConfig()
    assert (options.WIENER_ITERATIONS, options.MIX_FLOOR, options.OVERLAP,
            options.BATCH_SIZE) == (config.wiener_iterations, config.mix_floor,
                                    config.overlap, config.batch_size)
    assert options.REFERENCE_METHODS == REFERENCE_METHODS


# ------------------------------------------------------------------------------------- help


def _help(cli, *args: str, columns: int = 120) -> str:
    os.environ["COLUMNS"] = str(columns)
    try:
        code, out, err = cli(*args, "--help")
    finally:
        del os.environ["COLUMNS"]
    assert code == 0, err
    return out


COMMANDS = [(), ("separate",), ("detect",), ("synth",), ("train",), ("export",), ("models",),
            ("models", "list"), ("eval",), ("eval", "urmp"), ("eval", "synth"),
            ("eval", "compare")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cusep")
def test_help_has_no_misleading_type_tags(cli, command):
    text = _help(cli, *command)
    assert "<bool>" not in text  # flags take no value
    assert "list[" not in text
    assert "Usage: cusep" in text


def test_separate_help_lists_choices_and_instrument_codes(cli):
    text = " ".join(_help(cli, "separate", columns=200).split())
    for choice in ("<wav16|wav24|float32|flac|flac24|mp3|wav>", "<rescale|clamp>",
                   "<auto|fp32|bf16|fp16>", "<auto|cpu|cuda|cuda:N>", "FILE_OR_FOLDER",
                   "{parent}", "--json"):
        assert choice in text, choice
    for code, name in (("vn", "violin"), ("db", "double bass"), ("tba", "tuba")):
        assert f"{code} ({name})" in text
    eval_text = " ".join(_help(cli, "eval", "urmp", columns=200).split())
    assert "<paper|full>" in eval_text and "<auto|fp32|bf16|fp16>" in eval_text
    assert "<best|last>" in " ".join(_help(cli, "export", columns=200).split())


def test_top_level_descriptions_fit_one_line_at_80_columns(cli):
    text = _help(cli, columns=80)
    panel = text[text.index("Commands"):]
    rows = [line for line in panel.splitlines()[1:] if line.startswith("│")]
    names = [re.match(r"│ (\S+)", row) for row in rows]
    assert all(names), rows  # no continuation line: every row starts with a command
    assert [m.group(1) for m in names] == ["version", "separate", "detect", "align", "synth",
                                           "train", "export", "models", "eval"]
    assert all(row.rstrip(" │").endswith(".") for row in rows), rows  # whole sentences


def test_models_help_names_detectors(cli):
    assert "detectors" in _help(cli, "models")
    assert "detectors" in _help(cli, "models", "list")


def test_readme_option_table_matches_separate_help():
    """Every option of `cusep separate` has a row in the README's table, and every accepted
    value of a choice is named in its row (and nothing the command lacks is listed)."""
    import typer.main

    from cusep.cli import _register_all, app

    _register_all()
    command = typer.main.get_command(app).commands["separate"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## `cusep separate`"):readme.index("### Defaults, measured")]
    table = section[section.index("| option | meaning |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        cell = line.split("|")[1]
        for name in re.findall(r"--[\w-]+", cell):
            rows[name] = line
    documented = set(rows)
    options_ = {o for p in command.params for o in p.opts if o.startswith("--")} | {"--help"}
    assert documented == options_
    checked = 0
    for param in command.params:
        desc = param.type_descriptor
        if desc.is_choice:
            row = rows[next(o for o in param.opts if o.startswith("--"))]
            for choice in desc.choices:
                assert f"`{choice}`" in row, (param.name, choice)
            checked += 1
    assert checked == 3  # --format, --clip-mode, --precision
    for device in options.DEVICES.split("|"):
        assert f"`{device}`" in rows["--device"]
    formats = section[section.index("**Output formats**"):]
    for fmt in options.FORMATS:
        assert f"| `{fmt}`" in formats, fmt
