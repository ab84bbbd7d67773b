"""The package is layered (README, "Code layout"): every module imports only from its own layer
or the ones below, and no two modules import each other, directly or round a circle.

Imports are read with ``ast`` from the source, all of them: at the top, inside functions (lazy
imports) and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cusep"

# Lowest first; a module may import from its own layer and those above it in this list.
LAYERS: list[tuple[str, ...]] = [
    # leaves
    ("errors", "version", "instruments", "serial", "progress", "runtime", "atomic"),
    # signal stages and formats
    ("audio", "spectral", "wiener", "metrics", "score", "guide", "players"),
    # video
    ("video", "video.boxes", "video.frames", "video.motion", "video.overlay"),
    # networks
    ("visual", "model"),
    # model directories
    ("checkpoint",),
    # applications
    ("detect", "separate", "video_separate"),
    # dataset layouts and data synthesis
    ("data", "data.urmp", "data.solos", "data.banks", "data.frames", "data.mixing", "data.perturb",
     "data.recording", "data.sampler", "data.scores", "data.synth", "data.synth_video"),
    # configs and score alignment (which renders the score with data.synth)
    ("config", "align"),
    # training, evaluation, reports, export
    ("train", "evaluate", "report", "export"),
    # the public API (cusep/__init__.py)
    ("",),
    # the command line: shared pieces, commands, the app
    ("cli.common", "cli.options", "cli.claim"),
    ("cli.align", "cli.detect", "cli.eval", "cli.models", "cli.separate_video", "cli.synth",
     "cli.train"),
    ("cli.separate",),
    ("cli", "__main__"),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """cusep/video/frames.py -> 'video.frames'; cusep/data/__init__.py -> 'data'; the package's
    own __init__ -> ''."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def dotted(name: str) -> str:
    return _join("cusep", name)


def _is_package(name: str) -> bool:
    return MODULES.get(name) is not None and MODULES[name].name == "__init__.py"


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def imports_of(name: str) -> set[str]:
    """The cusep modules ``name`` imports (names as :func:`module_name` gives them)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "cusep" or alias.name.startswith("cusep."):
                    found.add(alias.name.removeprefix("cusep").lstrip("."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = _join(*base, node.module or "")
            elif node.module == "cusep" or (node.module or "").startswith("cusep."):
                target = node.module.removeprefix("cusep").lstrip(".")
            else:
                continue
            subs = [_join(target, a.name) for a in node.names if _join(target, a.name) in MODULES]
            found.update(subs)
            if len(subs) < len(node.names):  # names defined in the module itself
                found.add(target)
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    missing = sorted(n for n in MODULES if n not in LAYER)
    assert not missing, f"add these modules to LAYERS (and the README's Code layout): {missing}"
    unknown = sorted(n for n in GRAPH for m in GRAPH[n] if m not in MODULES)
    assert not unknown


def test_imports_point_down():
    upward = [f"{dotted(name)} (layer {LAYER[name]}) -> {dotted(m)} (layer {LAYER[m]})"
              for name in sorted(GRAPH) for m in sorted(GRAPH[name]) if LAYER[m] > LAYER[name]]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_circles():
    """Tarjan's strongly connected components: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {[[dotted(m) for m in c] for c in circles]}"


def test_the_checker_sees_lazy_and_relative_imports():
    assert "checkpoint" in GRAPH["separate"]  # at the top
    assert "model" in GRAPH["checkpoint"]  # inside functions
    assert "video.frames" in GRAPH["video.motion"]  # relative, inside a package
    assert "report" in GRAPH["cli.eval"]  # `from .. import report`: the submodule
    assert "cli.separate_video" in GRAPH["cli.separate"]  # lazy, in a command
