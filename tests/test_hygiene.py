"""The shape of the code itself, read with ``ast`` (nothing is imported or run).

- No import cycles between specfit modules. Imports inside functions count too: a lazy import
  still is a dependency, it only defers its cost (for heavy optional packages and the CLI's
  start-up), so it must point the same way as a module-level import would. Imports under
  ``if TYPE_CHECKING:`` do not count (they never run). A package importing its own
  submodules is not a cycle with those submodules importing their siblings (Python runs the
  parent ``__init__`` first).
- Dependencies flow one way (DESIGN.md): ``cli -> pipeline -> stages -> kernels``; kernels
  import only the standard library, numpy, scipy, numba and other kernels; only the API
  (``specfit/__init__``) and the commands (cli, demo, init) import the pipeline; only
  ``cluster.py`` imports dask_mpi/mpi4py; only ``viz/`` imports the plotting libraries.
- No private name crosses a module boundary: no ``from specfit.x import _y``, no import of a
  private module (``specfit.io._base``) from outside its package, and no ``obj._y`` attribute
  use in a module that does not itself define ``_y``.
- Every error class lives in ``specfit/errors.py`` and is imported from there.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "specfit"

ERRORS = {"SpecfitError", "ConfigError", "InputError", "StoreError", "RunError", "ClusterError"}
# Third-party packages each allowed in one place only: package -> module prefix allowed.
CONFINED = {
    "dask_mpi": "specfit.cluster",
    "mpi4py": "specfit.cluster",
    "holoviews": "specfit.viz",
    "panel": "specfit.viz",
    "bokeh": "specfit.viz",
    "matplotlib": "specfit.viz",
    "datashader": "specfit.viz",
}
KERNEL_DEPS = {"numpy", "scipy", "numba"}
PIPELINE_USERS = {"specfit", "specfit.cli", "specfit.demo", "specfit.init"}
# Layers of the main chain, lowest first: a module never imports one of a higher layer.
CHAIN = ["specfit.kernels", "specfit.stages", "specfit.pipeline", "specfit.cli"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


class Import:
    """One imported name: the module it comes from, the name (None for ``import m``), where."""

    def __init__(self, module: str, name: str | None, lazy: bool, line: int) -> None:
        self.module, self.name, self.lazy, self.line = module, name, lazy, line

    @property
    def target(self) -> str:
        """The specfit module depended on (``from pkg import submodule`` is the submodule)."""
        sub = f"{self.module}.{self.name}"
        return sub if sub in MODULES else self.module


def _absolute(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    if MODULES[mod].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str) -> list[Import]:
    tree = ast.parse(MODULES[mod].read_text(), str(MODULES[mod]))
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, None, inner, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(mod, child)
                found.extend(Import(source, a.name, inner, child.lineno) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


IMPORTS = {mod: _imports(mod) for mod in MODULES}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path)


def _where(mod: str, imp: Import) -> str:
    return f"{_rel(MODULES[mod])}:{imp.line}"


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def test_the_scan_sees_the_package():
    # Guards every test below against passing because nothing was read.
    assert {"specfit.cli", "specfit.pipeline", "specfit.kernels.periodogram"} <= set(MODULES)
    targets = {i.target for i in IMPORTS["specfit.cli"]}
    assert "specfit.pipeline" in targets and "specfit.errors" in targets


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, imps in IMPORTS.items():
        for imp in imps:
            if imp.target in MODULES and imp.target != mod:
                graph[mod].add(imp.target)
    # Depth-first search; a back edge closes a cycle, reported as its chain of modules.
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_dependencies_flow_one_way():
    bad = []
    stdlib = set(sys.stdlib_module_names)
    for mod, imps in IMPORTS.items():
        for imp in imps:
            top = imp.module.split(".")[0]
            if _within(mod, "specfit.kernels"):
                if not (
                    top in stdlib or top in KERNEL_DEPS or _within(imp.module, "specfit.kernels")
                ):
                    bad.append(f"{_where(mod, imp)}: a kernel imports {imp.module}")
            for package, home in CONFINED.items():
                if top == package and not _within(mod, home):
                    bad.append(f"{_where(mod, imp)}: {package} is imported only in {home}")
            if _within(imp.target, "specfit.pipeline") and mod not in PIPELINE_USERS:
                bad.append(f"{_where(mod, imp)}: only the API and the commands use the pipeline")
            layer = [i for i, p in enumerate(CHAIN) if _within(mod, p)]
            above = [p for p in CHAIN[layer[0] + 1 :]] if layer else []
            if any(_within(imp.target, p) for p in above):
                bad.append(f"{_where(mod, imp)}: {mod} imports {imp.target}, a higher layer")
    assert not bad, "\n".join(bad)


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not name.startswith("__")


def _defined_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    return names


def test_no_private_names_across_modules():
    bad = []
    for mod, imps in IMPORTS.items():
        for imp in imps:
            if not imp.module.startswith("specfit"):
                continue
            if _private(imp.name) and imp.target != mod:
                bad.append(f"{_where(mod, imp)}: imports the private {imp.module}.{imp.name}")
            # A private module belongs to its package: specfit.io._base to specfit.io.*.
            parts = imp.target.split(".")
            for i, part in enumerate(parts):
                if _private(part) and not _within(mod, ".".join(parts[:i])):
                    bad.append(f"{_where(mod, imp)}: imports the private module {imp.target}")
                    break
        tree = ast.parse(MODULES[mod].read_text())
        own = _defined_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr not in own:
                bad.append(
                    f"{_rel(MODULES[mod])}:{node.lineno}: uses {ast.unparse(node)}, private to another module"
                )
    assert not bad, "\n".join(bad)


def test_errors_live_in_one_module():
    bad = []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                if mod != "specfit.errors":
                    bad.append(f"{path.name}:{node.lineno}: class {node.name} outside errors.py")
        for imp in IMPORTS[mod]:
            if imp.name in ERRORS and imp.module != "specfit.errors":
                bad.append(f"{_where(mod, imp)}: import {imp.name} from specfit.errors")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "source, message",
    [
        ("from specfit.stages import _helper\n", "imports the private"),
        ("from specfit.io._base import hpc_coords\n", "private module"),
        ("def f(m):\n    return m._x(1)\n", "private to another module"),
    ],
)
def test_the_private_name_check_catches_each_form(tmp_path, monkeypatch, source, message):
    # The checks are only worth something if they fail: plant each violation once.
    fake = tmp_path / "specfit" / "prep" / "planted.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setitem(MODULES, "specfit.prep.planted", fake)
    monkeypatch.setitem(IMPORTS, "specfit.prep.planted", _imports("specfit.prep.planted"))
    with pytest.raises(AssertionError, match=f"planted.py:[12]: .*{message}"):
        test_no_private_names_across_modules()


def test_the_cycle_check_catches_a_lazy_back_edge(monkeypatch):
    planted = Import("specfit.pipeline", "run", True, 1)
    monkeypatch.setitem(IMPORTS, "specfit.stages", [*IMPORTS["specfit.stages"], planted])
    with pytest.raises(AssertionError, match="specfit.pipeline -> specfit.stages"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="a higher layer"):
        test_dependencies_flow_one_way()


def test_every_public_name_imports():
    import specfit

    namespace: dict = {}
    exec("from specfit import *", namespace)
    assert len(specfit.__all__) == len(set(specfit.__all__))
    for name in specfit.__all__:
        assert namespace[name] is getattr(specfit, name), name
    assert issubclass(specfit.StoreError, specfit.SpecfitError)
    assert callable(specfit.run) and callable(specfit.fit) and specfit.models.get_model
    # Explicit: every public name is bound by an import in __init__.py (no __getattr__).
    tree = ast.parse((ROOT / "__init__.py").read_text())
    bound = {
        a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert set(specfit.__all__) <= bound
    assert not any(isinstance(n, ast.FunctionDef) for n in tree.body)


def test_package_data_exists_and_is_shipped():
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["specfit"]
    data = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    for pattern in globs:
        assert any(fnmatch.fnmatch(f, pattern) for f in data), f"{pattern} matches no file"
    for f in data:
        assert any(fnmatch.fnmatch(f, pattern) for pattern in globs), f"{f} is not shipped"


def test_every_default_comes_from_the_config():
    import inspect

    from specfit import stages, synthetic
    from specfit.config import DEFAULTS
    from specfit.kernels import fitting, lm, periodogram
    from specfit.prep import coalign, derotate, despike

    spectra, fit, prep = DEFAULTS.spectra, DEFAULTS.fit, DEFAULTS.prep
    # Kernels (no config import there) take no default for a setting the config has.
    for func, section in [
        (periodogram.periodogram, spectra),
        (fitting.fit_block, fit),
        (fitting.lrt_reference, fit),
        (fitting.output_dtypes, fit),
        (lm.solve, fit),
    ]:
        for name, par in inspect.signature(func).parameters.items():
            if name in type(section).model_fields and getattr(section, name) is not None:
                assert par.default is inspect.Parameter.empty, f"{func.__name__}({name}=...)"
    # Everything else offering a setting defaults to the config's value.
    rename = {"size": "despike_size", "sigma": "despike_sigma", "max_shift": "coalign_max_shift"}
    rename |= {"order": "interpolation_order", "method": "derotate_method"}
    checked = 0
    for func, section, names in [
        (stages.power_spectra, spectra, {}),
        (stages.resample, DEFAULTS.resample, {}),
        (stages.fit, fit, {}),
        (despike, prep, rename),
        (coalign, prep, rename),
        (derotate, prep, rename),
        (synthetic.make_synthetic, DEFAULTS.input.synthetic, {}),
        (synthetic.synthetic_series, DEFAULTS.input.synthetic, {}),
    ]:
        for name, par in inspect.signature(func).parameters.items():
            key = names.get(name, name)
            if key in type(section).model_fields:
                value = getattr(section, key)
                if isinstance(value, dict | list):
                    # A container is never a signature default: None stands for the config's
                    # (or an empty tuple for an empty list).
                    ok = par.default is None or (not value and par.default == ())
                elif func is stages.fit:
                    # None: the run's setting for a store's spectra (fit_settings), else the
                    # config's; resolved inside (test_tile_chain checks both)
                    ok = par.default is None or par.default == value
                else:
                    ok = par.default == value
                assert ok, f"{func.__name__}({name}={par.default!r}): the config has {value!r}"
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    "module, imported, message",
    [
        ("specfit.kernels.lm", "xarray", "a kernel imports xarray"),
        ("specfit.store", "holoviews", "holoviews is imported only in specfit.viz"),
        ("specfit.pipeline", "dask_mpi", "dask_mpi is imported only in specfit.cluster"),
        ("specfit.store", "specfit.pipeline", "only the API and the commands use the pipeline"),
    ],
)
def test_the_dependency_check_catches_each_rule(monkeypatch, module, imported, message):
    planted = Import(imported, None, True, 1)
    monkeypatch.setitem(IMPORTS, module, [*IMPORTS[module], planted])
    with pytest.raises(AssertionError, match=message):
        test_dependencies_flow_one_way()
