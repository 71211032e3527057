"""The house's rules, checked: no import circle among the strategies' modules, no pointer to a missing section."""
import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, package: str) -> set[str]:
    """The modules of `package` a file imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(package))
    return found


def _modules(package: str) -> dict[str, Path]:
    modules = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_no_import_circle_among_the_strategies_modules():
    modules = _modules("strategies")
    graph = {name: {m for m in _imports(path, "strategies") if m in modules and m != name}
             for name, path in modules.items() if not path.name == "__init__.py"}
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    graph = {name: deps - packages for name, deps in graph.items()}  # a package's __init__ only re-exports
    visiting, done, circles = [], set(), []

    def visit(name):
        if name in visiting:
            circles.append(visiting[visiting.index(name):] + [name])
            return
        if name in done:
            return
        visiting.append(name)
        for dep in sorted(graph.get(name, ())):
            visit(dep)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert circles == []


POINTER = re.compile(r'BENCHMARKS\.md,\s*"([^"]+)"')


def _headings() -> list[str]:
    return [line.lstrip("#").strip() for line in (ROOT / "BENCHMARKS.md").read_text().splitlines()
            if line.startswith("#")]


def test_every_pointer_into_benchmarks_names_an_existing_heading():
    files = subprocess.run(["git", "ls-files", "*.py", "*.yaml", "README.md", "*.toml"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    headings = _headings()
    missing, seen = [], 0
    for name in files:
        text = (ROOT / name).read_text()
        # A pointer may run over comment lines: fold a line break and its comment marks into a space.
        folded = re.sub(r'\s*\n\s*(?:#|\*|//)?\s*', " ", text)
        for match in POINTER.finditer(folded):
            seen += 1
            if not any(h.startswith(match.group(1)) for h in headings):
                missing.append((name, match.group(1)))
    assert seen > 10 and missing == []
