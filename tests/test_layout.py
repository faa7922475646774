"""The architecture's rules, checked on the source: layers import downwards only, functions stay
short, and the package's public entry points exist."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "diffusion_policy_dist"
# the folders installed inside the package (pyproject.toml's package-dir)
SOURCES = [PKG, ROOT / "envs", ROOT / "benchmarks"]


def modules(folder: Path):
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def imported_names(path: Path) -> set[str]:
    """Absolute names of what a module imports (relative imports resolved in the package)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT).with_suffix("").parts
    # envs/ and benchmarks/ install as diffusion_policy_dist.envs and .benchmarks
    top = [] if rel[0] == "diffusion_policy_dist" else ["diffusion_policy_dist"]
    pkg = [*top, *rel[:-1]]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("layer", ["data", "training", "models", "diffusion", "policy", "control"])
def test_lower_layers_never_import_evaluation_or_cli(layer):
    for path in modules(PKG / layer):
        bad = [
            n
            for n in imported_names(path)
            if n.startswith(("diffusion_policy_dist.evaluation", "diffusion_policy_dist.cli"))
        ]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("layer", ["data", "training", "models", "diffusion", "policy"])
def test_the_policy_and_below_never_import_the_controller(layer):
    for path in modules(PKG / layer):
        bad = [n for n in imported_names(path) if n.startswith("diffusion_policy_dist.control")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_envs_import_nothing_above_them():
    for path in modules(ROOT / "envs"):
        bad = [
            n
            for n in imported_names(path)
            if n.startswith("diffusion_policy_dist.")
            and not n.startswith(("diffusion_policy_dist.envs", "diffusion_policy_dist.files"))
        ]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_importing_training_loads_no_simulator():
    code = (
        "import sys, diffusion_policy_dist.training.build, diffusion_policy_dist.training.trainer;"
        "print(sorted(m for m in ('gymnasium', 'mujoco') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        f"{path.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        and n.end_lineno - n.lineno + 1 > limit
    ]


def test_functions_stay_short():
    too_long = [f for src in SOURCES for p in modules(src) for f in long_functions(p, 60)]
    assert not too_long, too_long


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_no_import_cycle_in_diffusion():
    """Every import, at load time or inside a function, follows one acyclic order."""
    paths = modules(PKG / "diffusion")
    names = {module_name(p): p for p in paths}
    graph = {
        m: {n for n in names if n != m and any(i == n or i.startswith(n + ".")
                                                for i in imported_names(p))}
        for m, p in names.items()
    }  # fmt: skip
    graph = {m: {n for n in deps if not m.startswith(n + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*path, m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_nothing_outside_diffusion_asks_which_process_it_has():
    """Processes are used through their interface: no isinstance on a process class, and no
    branching on a process family, outside diffusion/."""
    bad = []
    for src in SOURCES:
        for path in modules(src):
            if (PKG / "diffusion") in path.parents:
                continue
            text = path.read_text()
            for needle in ("isinstance", ".family ==", ".family !=", ".family in"):
                for line in text.splitlines():
                    if needle in line and ("PhaseSpace" in line or "VPProcess" in line
                                           or ".family" in line):  # fmt: skip
                        bad.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not bad, bad


def test_no_test_functions_in_library_modules():
    for src in SOURCES:
        for path in modules(src):
            tree = ast.parse(path.read_text())
            names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            assert not [n for n in names if n.startswith("test")], path


def test_load_policy_is_public(tmp_path):
    import diffusion_policy_dist

    policy = diffusion_policy_dist.load_policy(ROOT / "tests" / "fixtures" / "v1" / "mean")
    assert not policy.training and policy.checkpoint_meta["step"] == 30
