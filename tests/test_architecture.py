"""The shape of the code: imports go one way through the layers of docs/design.md, and no module-level import cycle.

The layers are folders: compress/core -> data -> models -> compression -> distill -> exports/ -> bench/ ->
compress/report -> pipeline -> search -> verbs -> the command lines. A module may import its own layer or a lower one,
anywhere in the file (imports inside functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "exports", "bench")

LAYERS = ["core", "data", "models", "compression", "distill", "exports", "bench", "report", "pipeline", "search",
          "verbs", "cli"]

# Folder (package) -> layer; the longest matching prefix wins. Only the command lines sit outside a folder.
LAYER_OF = {
    "compress.core": "core",
    "compress.data": "data",
    "compress.models": "models",
    "compress.compression": "compression",
    "compress.distill": "distill",
    "exports": "exports",
    "bench": "bench",
    "compress.report": "report",
    "compress.pipeline": "pipeline",
    "compress.search": "search",  # many runs of the pipeline's stages; the pipeline never imports it
    "compress.verbs": "verbs",
    "compress.cli": "cli",
    "compress.entry": "cli",
    "bench.cli": "cli",
    "bench.labelling_speed": "cli",  # a `python -m` measurement over a run folder's data stage
    "bench.data_stage": "cli",  # a `python -m` measurement of the data stage on a large CSV
}


# The package's own __init__ is the Python API (`from compress import run`): a front door like the CLI, so it sits
# at the top; nothing inside the packages imports it.
PUBLIC_API = {"compress": "cli"}


def layer(module: str) -> int:
    if module in PUBLIC_API:
        return LAYERS.index(PUBLIC_API[module])
    prefixes = [p for p in LAYER_OF if module == p or module.startswith(p + ".")]
    return LAYERS.index(LAYER_OF[max(prefixes, key=len)])


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Our modules that `path` imports (`from pkg import name` counts pkg.name when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES and name in MODULES}
    return found


def test_every_module_has_a_layer():
    assert len(MODULES) > 40  # the walk found the packages
    for module in MODULES:
        assert 0 <= layer(module) < len(LAYERS)


def test_compress_is_folders_of_layers():
    """compress/ holds the command lines and its public API; every other module lives in the folder of its layer."""
    flat = sorted(p.name for p in (ROOT / "compress").glob("*.py"))
    assert flat == ["__init__.py", "cli.py", "entry.py"]
    folders = sorted(p.name for p in (ROOT / "compress").iterdir() if (p / "__init__.py").is_file())
    assert folders and all(LAYER_OF.get(f"compress.{folder}") == folder for folder in folders), folders


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    upward = sorted(name for name in imports(MODULES[module], top_level_only=False) if layer(name) > layer(module))
    assert not upward, f"{module} ({LAYERS[layer(module)]}) imports a higher layer: " + ", ".join(
        f"{name} ({LAYERS[layer(name)]})" for name in upward)


def test_no_module_level_import_cycle():
    graph = {m: imports(p, top_level_only=True) - {m} for m, p in MODULES.items()}
    state: dict[str, str] = {}  # visiting | done

    def visit(module: str, path: list[str]) -> None:
        state[module] = "visiting"
        for other in sorted(graph[module]):
            if state.get(other) == "visiting":
                cycle = path[path.index(other):] + [other] if other in path else [module, other]
                pytest.fail("module-level import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, path + [other])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself can fail: a data module importing the pipeline is flagged."""
    bad = tmp_path / "bad.py"
    bad.write_text("from compress.pipeline.pipeline import run\n")
    found = imports(bad, top_level_only=False)
    assert found == {"compress.pipeline.pipeline"}
    assert layer("compress.pipeline.pipeline") > layer("compress.data.sources")


# ---------------------------------------------------------------- parameters

# A function that needs more values than this takes a spec object instead (a config's own type, a settings
# dataclass): a long positional list handed through several hops is where two values get swapped unseen. The
# command lines' typer signatures are exempt (each parameter is a flag), and so are transformers config classes'
# __init__, which list their fields as keyword arguments as transformers' own configs do (it reads them by name).
MAX_PARAMETERS = 8
CLI_MODULES = {"compress.cli", "bench.cli"}


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, in_class: bool) -> list[str]:
    """The parameters a caller fills: positional, keyword-only, *args and **kwargs; not a method's self or cls."""
    args = function.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [f"*{a.arg}" for a in (args.vararg, args.kwarg) if a is not None]
    return names[1:] if in_class and names and names[0] in ("self", "cls") else names


def long_signatures(path: Path) -> list[str]:
    """`name (line): N parameters` for each function of the file that takes more than MAX_PARAMETERS."""
    found = []

    def visit(node: ast.AST, in_class: bool, hf_config: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                bases = {ast.unparse(base).split(".")[-1] for base in child.bases}
                visit(child, True, "PretrainedConfig" in bases)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                names = parameters(child, in_class)
                exempt = hf_config and getattr(child, "name", None) == "__init__"
                if len(names) > MAX_PARAMETERS and not exempt:
                    found.append(f"{getattr(child, 'name', 'lambda')} (line {child.lineno}): {len(names)} parameters")
                visit(child, False, False)
            else:
                visit(child, in_class, hf_config)

    visit(ast.parse(path.read_text(encoding="utf-8")), False, False)
    return found


@pytest.mark.parametrize("module", sorted(set(MODULES) - CLI_MODULES))
def test_no_function_takes_more_than_eight_parameters(module):
    long = long_signatures(MODULES[module])
    assert not long, f"{module}: take a spec object instead of " + "; ".join(long)


def test_the_parameter_check_catches_a_long_signature(tmp_path):
    """The checker itself can fail: nine parameters are flagged, a method's self is not counted, and a transformers
    config's __init__ is let through."""
    source = tmp_path / "long.py"
    source.write_text("def f(a, b, c, d, e, g, h, i, *, j=0): pass\n"
                      "class A:\n    def m(self, a, b, c, d, e, g, h, i): pass\n"
                      "class C(PretrainedConfig):\n    def __init__(self, a, b, c, d, e, g, h, i, j, **kw): pass\n")
    assert long_signatures(source) == ["f (line 1): 9 parameters"]
