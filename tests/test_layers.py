"""mcugen's modules stand in a stated order of layers and import only downward (or within their
layer, without circles); imports sit at the top of a file unless a comment says why not.
The layers, lowest first, and what each holds: docs/design.md, section 3."""
import ast
from collections import defaultdict

from conftest import REPO

PACKAGE = REPO / "mcugen"
# module prefix -> layer; the longest prefix that matches a module names its layer
LAYERS = [
    ("leaves", ["mcugen.errors", "mcugen.version", "mcugen.resources", "mcugen.boards",
                "mcugen.cycle_model", "mcugen.text_table"]),
    ("ir", ["mcugen.ir"]),
    ("numerics", ["mcugen.numerics", "mcugen.lower.fixedpoint", "mcugen.lower.encoders",
                  "mcugen.lower.product", "mcugen.lower.decode_width"]),
    ("ops", ["mcugen.ops"]),
    ("stages", ["mcugen.reference", "mcugen.frontend", "mcugen.passes", "mcugen.quant",
                "mcugen.lower"]),
    ("runners and project writer", ["mcugen.codegen", "mcugen.rtl", "mcugen.runners"]),
    ("targets", ["mcugen.targets"]),
    ("commands", ["mcugen.pipeline", "mcugen.verify", "mcugen.report", "mcugen.explore",
                  "mcugen.cli", "mcugen.__main__", "mcugen"]),
]
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}
DEFERRED = "deferred:"     # the comment that states why an import is inside a function


def modules() -> dict:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int:
    prefix = max((p for p in RANK if module == p or module.startswith(p + ".")), key=len)
    return RANK[prefix]


def imported(node, module_names) -> list:
    """The mcugen modules an import statement loads (a name imported from a package that is a
    module counts as that module)."""
    if isinstance(node, ast.ImportFrom):
        if not (node.module or "").startswith("mcugen"):
            return []
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in module_names else node.module
                for a in node.names]
    return [a.name for a in node.names if a.name.startswith("mcugen")]


def import_edges():
    """(importer, imported, line, inside a function) for every import of an mcugen module."""
    names = modules()
    for module, path in names.items():
        tree = ast.parse(path.read_text())
        nested = {id(sub) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for sub in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, names):
                    while target not in names:
                        target = target.rpartition(".")[0]
                    if target != module:
                        yield module, target, node.lineno, id(node) in nested


def test_every_module_has_a_layer():
    for module in modules():
        assert any(module == p or module.startswith(p + ".") for p in RANK), module


def test_imports_go_down_the_layers():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]}), line {line}"
              for a, b, line, _ in import_edges() if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = defaultdict(set)
    for a, b, _, _ in import_edges():
        edges[a].add(b)
    circles, index, low, stack, on = [], {}, {}, [], set()

    def visit(v):               # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))
    for module in modules():
        if module not in index:
            visit(module)
    assert not circles, circles


def test_imports_inside_functions_say_why():
    """Any import inside a function (mcugen's or a third party's) follows a `# deferred: ...`
    comment in its block."""
    unexplained = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not _explained(lines, node.lineno - 1):
                    unexplained.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "\n".join(unexplained)


def _explained(lines, index) -> bool:
    """A comment with DEFERRED above the import, past other imports of the same block."""
    while index > 0:
        index -= 1
        text = lines[index].strip()
        if text.startswith("#"):
            return DEFERRED in text
        if not text.startswith(("import ", "from ")):
            return False
    return False


def test_the_layers_catch_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: a leaf that imported the pipeline would be reported."""
    def with_upward_edge():
        yield "mcugen.errors", "mcugen.pipeline", 1, True
    monkeypatch.setattr(__import__(__name__), "import_edges", with_upward_edge)
    try:
        test_imports_go_down_the_layers()
    except AssertionError as error:
        assert "mcugen.errors (leaves) imports mcugen.pipeline (commands)" in str(error)
    else:
        raise AssertionError("an upward import went unreported")
