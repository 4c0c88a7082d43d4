"""dvc.yaml lists, for each stage, every mnistbench module its command imports.

DVC decides what to rerun from a stage's declared deps: a module the command imports but
dvc.yaml does not list is a silent stale result (edit it, `dvc status` says all is well).
The imports are derived here from the code itself (every `import` statement of the command's
function in its module of mnistbench/cli/, then transitively of each module reached, a train stage's backend file
included) and compared with dvc.yaml's deps.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "mnistbench"


def module_path(name: str) -> Path | None:
    """src/ path of a mnistbench module or package, None if the name is not one."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(node: ast.AST, current: str) -> set[str]:
    """mnistbench modules named by one import statement (a from-import's names may be
    submodules: `from mnistbench import config` imports mnistbench.config)."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the current module's package
            package = current.rsplit(".", node.level)[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        names = {base} | {f"{base}.{a.name}" for a in node.names}
    found = set()
    for name in names:
        if name.split(".")[0] != PACKAGE:
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a submodule import runs its packages' __init__
            if module_path(".".join(parts[:i])) is not None:
                found.add(".".join(parts[:i]))
    return found


def imports_in(tree: ast.AST, current: str) -> set[str]:
    """Every mnistbench import anywhere under `tree`, function bodies included; not those
    under `if TYPE_CHECKING:`, which never run."""
    skipped = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    return set().union(
        *(
            _imported(n, current)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped
        )
    )


def closure(start: set[str], done: frozenset[str] = frozenset()) -> set[str]:
    """`start` and every module it imports, transitively; modules in `done` are not read
    again (a CLI module: only the command's own part of it counts)."""
    seen, todo = set(done), list(start - done)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(name)
        todo += imports_in(ast.parse(path.read_text()), name) - seen
    return seen


def command_imports(command: str) -> set[str]:
    """Modules `mnistbench <command>` imports: the CLI package (its __init__ loads the
    command's module by name, mnistbench.cli.COMMANDS), that module's module-level imports,
    its command function's and those of the functions that decorate it (e.g. known_errors);
    not its other commands' (each imports its library module inside its function)."""
    from mnistbench.cli import COMMANDS

    current = f"{PACKAGE}.cli.{COMMANDS[command]}"
    tree = ast.parse(module_path(current).read_text())
    top = set().union(
        *(_imported(n, current) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    )
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for fn in functions.values():
        for dec in fn.decorator_list:
            if (
                isinstance(dec, ast.Call)
                and isinstance(dec.func, ast.Attribute)
                and dec.func.attr == "command"
            ):
                name = dec.args[0].value if dec.args else fn.name.replace("_", "-")
                if name == command:
                    return {f"{PACKAGE}.cli", current, *top, *imports_in(fn, current)}
    raise AssertionError(f"{current} defines no command {command!r}")


def stage_modules(cmd: str) -> set[str]:
    """The modules a stage's `mnistbench ...` command runs, transitively."""
    words = cmd.split()
    assert words[0] == "mnistbench", cmd
    start = command_imports(words[1])
    if words[1] == "train":  # backends.load(name) imports the backend's own file by name
        start.add(f"{PACKAGE}.backends.{words[2]}")
    from mnistbench.cli import COMMANDS

    command_module = f"{PACKAGE}.cli.{COMMANDS[words[1]]}"  # read only in command_imports
    return closure(start, frozenset({command_module})) | {command_module}


def as_files(modules: set[str]) -> set[str]:
    return {str(module_path(m).relative_to(ROOT)) for m in modules}


def uncovered(files: set[str], deps: set[str]) -> list[str]:
    """The files that no dep names, itself or through a folder above it."""
    return sorted(f for f in files if not any(p in deps for p in [f, *map(str, Path(f).parents)]))


def resolved_stages() -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them (foreach expanded, vars substituted)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {
            s.addressing: {
                "cmd": s.cmd,
                "deps": {str(d.def_path) for d in s.deps},
                "outs": [str(o.def_path) for o in s.outs],
            }
            for s in repo.index.stages
        }


STAGES = resolved_stages()


@pytest.mark.parametrize(
    "stage", sorted(n for n, s in STAGES.items() if s["cmd"].startswith("mnistbench"))
)
def test_every_imported_module_is_a_dep(stage):
    needed = as_files(stage_modules(STAGES[stage]["cmd"]))
    missing = uncovered(needed, STAGES[stage]["deps"])
    assert not missing, (
        f"dvc.yaml: stage {stage} runs `{STAGES[stage]['cmd']}`, which imports "
        f"{', '.join(missing)}; add them to its deps"
    )


@pytest.mark.parametrize("stage", sorted(n for n in STAGES if n.startswith("train@")))
def test_a_backend_depends_only_on_its_own_helpers(stage):
    """Backend files and helpers (backends/_*.py) a backend does not import are not deps."""
    needed = as_files(stage_modules(STAGES[stage]["cmd"]))
    code = {d for d in STAGES[stage]["deps"] if d.startswith("src/")}
    extra = sorted(d for d in code - needed if "/backends/" in d)
    assert not extra, f"dvc.yaml: {stage} depends on {', '.join(extra)}, which it never imports"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The derivation sees a lazy import (inside a function), as the CLI's commands use."""
    tree = ast.parse("def f():\n    from mnistbench import download\n")
    assert imports_in(tree, "mnistbench.x") == {"mnistbench", "mnistbench.download"}
    assert "mnistbench.config" in closure({"mnistbench.download"})


def test_every_backend_of_params_has_its_train_stage_and_data():
    from mnistbench import config

    cfg = config.load(ROOT / "params.yaml")
    trained = {n.split("@", 1)[1]: s for n, s in STAGES.items() if n.startswith("train@")}
    assert list(trained) == list(cfg.backends), "dvc.yaml's train stages follow params' backends"
    for name, entry in cfg.backends.items():
        assert entry.data in trained[name]["deps"], f"train@{name} must depend on {entry.data}"


def test_compare_depends_on_every_backends_metrics():
    """One folder holds every train@ stage's outputs: compare depends on it, not on a list."""
    from mnistbench import layout

    assert str(layout.train_dir(layout.METRICS_ROOT)) in STAGES["compare"]["deps"]
    for name in (n for n in STAGES if n.startswith("train@")):
        assert STAGES[name]["outs"] and all(
            out.startswith(f"{layout.train_dir(layout.METRICS_ROOT)}/")
            for out in STAGES[name]["outs"]
        )


# Modules no timed stage may depend on: how the data was fetched and built, and how results
# are drawn and reported. An edit to one of them reruns no training.
NOT_TIMING_INPUTS = (
    "colors.py",
    "compare",
    "download.py",
    "gather.py",
    "keep.py",
    "report.py",
    "sweep.py",
    "tfds_build.py",
)


@pytest.mark.parametrize(
    "stage", sorted(n for n in STAGES if n.startswith("train@")) + ["roofline"]
)
def test_a_timed_stage_depends_on_nothing_it_does_not_time(stage):
    code = {d for d in STAGES[stage]["deps"] if d.startswith("src/")}
    extra = sorted(d for d in code if d.removeprefix("src/mnistbench/") in NOT_TIMING_INPUTS)
    assert not extra, f"dvc.yaml: timed stage {stage} depends on {', '.join(extra)}"
    unused = sorted(code - as_files(stage_modules(STAGES[stage]["cmd"])))
    assert not unused, f"dvc.yaml: {stage} depends on {', '.join(unused)}, which it never imports"


def test_every_timed_stage_depends_on_the_machine():
    timed = [n for n in STAGES if n.startswith("train@") or n == "roofline"]
    assert timed and all("metrics/machine.json" in STAGES[n]["deps"] for n in timed)
