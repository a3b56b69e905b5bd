"""Static allow-list policy for untrusted strategy code.

A cheap first line of defence before a candidate reaches a sandboxed worker: it refuses what a trading strategy
never needs (files, processes, network, clocks, introspection, dynamic code) so that most escapes die here with a
readable reason the LLM can learn from. AST only: the checked code is never executed or imported. The runtime
sandbox (timeouts, memory limits, process isolation) still applies; this is not a complete sandbox by itself.

Rules (``PolicyViolation.rule``):
  syntax              the code does not parse
  forbidden-import    an import outside ALLOWED_IMPORTS, a relative import or ``import *``
  forbidden-call      a call to a FORBIDDEN_BUILTINS name (``open()``, ``eval()``, ``getattr()``, ...)
  forbidden-name      any other reference to those names (``f = eval``), or to ``nautilus_pyo3``
  dunder              a ``__dunder__``/``__private`` name, attribute, function name or string constant
  private-attribute   ``x._name``: base-class and engine internals are off limits
  forbidden-attribute an attribute reaching files/processes/network/clocks (``.os``, ``.system``, ``.now``, ...)
  direct-order        order management or engine control outside go_long/go_short/go_flat (``submit_order``,
                      ``order_factory``, ``msgbus``, cache mutators, ``stop()``...)
  protected-attribute assigning to a trusted member of the base (``self.on_stop = ...``, ``self.trade_fraction``)
  global-statement    ``global``/``nonlocal``
  async               ``async def``/``await``/``async for``/``async with``
  broad-except        bare ``except:`` or ``except BaseException`` (would swallow the runtime's timeout)
  infinite-loop       ``while <true constant>:`` with no ``break`` in its body
  huge-power          ``a ** b`` with a constant exponent above 10,000 or a nested power (hangs at compile time)

getattr/setattr/delattr are refused entirely, even with literal names: strategies need none of them and a
literal check would still allow ``getattr(x, "ev" + "al")``-style games with helper variables.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from alpha_evolve.source import parse as parse_source

ALLOWED_IMPORTS: frozenset[str] = frozenset(
    {
        "nautilus_trader.indicators",
        "nautilus_trader.model.data",
        "nautilus_trader.model.enums",
        "nautilus_trader.model.objects",
        "nautilus_trader.model.identifiers",
        "nautilus_trader.model.orders",
        "nautilus_trader.trading.strategy",
        "nautilus_trader.config",
        "alpha_evolve.strategies.base",
        "math",
        "decimal",
        "statistics",
        "collections",
        "dataclasses",
        "typing",
        "__future__",
        "enum",
        "functools",
        "itertools",
    }
)
# Packages whose submodules are allowed too (``nautilus_trader.indicators.averages``); the others are exact.
_ALLOWED_PACKAGES: frozenset[str] = frozenset({"nautilus_trader.indicators", "collections"})

FORBIDDEN_BUILTINS: frozenset[str] = frozenset(
    {
        "open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr", "setattr",
        "delattr", "input", "breakpoint", "memoryview", "help", "dir", "exit", "quit", "type", "object",
    }
)  # fmt: skip

FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "os", "sys", "subprocess", "socket", "shutil", "pathlib", "io", "time", "threading", "multiprocessing",
        "asyncio", "ctypes", "importlib", "pickle", "marshal", "signal", "resource", "urllib", "http",
        "requests", "builtins", "gc", "inspect", "tempfile", "glob", "datetime", "now", "utcnow", "today",
        "system", "popen", "spawn", "fork", "kill", "environ", "modules", "nautilus_pyo3", "f_globals",
        "f_locals", "f_back", "gi_frame", "cr_frame", "tb_frame", "func_globals", "read_text", "write_text",
        "read_bytes", "write_bytes", "unlink", "remove", "rmtree", "mkdir", "chmod",
        # string -> code or string -> object: eval behind a library call, import by dotted path
        "get_type_hints", "ForwardRef", "singledispatch", "singledispatchmethod", "attrgetter", "methodcaller",
        "resolve_path", "resolve_config_path", "import_module", "bltns",
    }
)  # fmt: skip

ORDER_API: frozenset[str] = frozenset(
    {
        "submit_order", "submit_order_list", "order_factory", "modify_order", "cancel_order", "cancel_orders",
        "cancel_all_orders", "cancel_gtd_expiry", "close_position", "close_all_positions", "query_order",
        "query_account", "msgbus", "add_order", "add_position", "update_order", "update_position",
        "update_account", "add_account", "stop", "dispose", "fault", "degrade", "register", "deregister",
    }
)  # fmt: skip

PROTECTED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "on_start", "on_stop", "on_bar", "on_reset", "on_resume", "on_dispose", "on_event", "on_data",
        "go_long", "go_short", "go_flat", "is_long", "is_short", "is_flat", "bars_seen", "trade_fraction",
        "allow_short", "instrument_id", "bar_type", "instrument", "config", "portfolio", "cache", "clock", "log",
        "msgbus", "setup_indicators", "decide", "short_refusals", "register_indicator_for_bars",
        "subscribe_bars", "unsubscribe_bars", "stop", "decision_log",
    }
)  # fmt: skip

_POWER_LIMIT = 10_000


@dataclass(frozen=True)
class PolicyViolation:
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.rule}] {self.message}"


def _is_dunder_like(name: str) -> bool:
    return name.startswith("__")


def _module_allowed(module: str) -> bool:
    if module in ALLOWED_IMPORTS:
        return True
    return any(module.startswith(package + ".") for package in _ALLOWED_PACKAGES)


def module_or_parent_allowed(module: str) -> bool:
    """The runtime import guard's test: an allowed module or a package on the way to one (``import a.b`` binds a)."""
    return _module_allowed(module) or any(allowed.startswith(module + ".") for allowed in ALLOWED_IMPORTS)


def _imports_by_path(module: str, name: str) -> bool:
    """nautilus_trader.config's factories and Importable*Config turn a dotted-path string into any object."""
    return (module.startswith("nautilus_trader.config") and not name.endswith("Config")) or name.startswith(
        "Importable"
    )


def _is_true_constant(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value)


def _has_break(loop: ast.While) -> bool:
    """A ``break`` that belongs to this loop (not to a nested loop or function)."""
    stack: list[ast.AST] = list(loop.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Break):
            return True
        if isinstance(node, ast.For | ast.While | ast.AsyncFor | ast.FunctionDef | ast.AsyncFunctionDef
                      | ast.Lambda | ast.ClassDef):  # fmt: skip
            continue
        if isinstance(node, ast.Return):
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.violations: list[PolicyViolation] = []
        self._reported_calls: set[int] = set()

    def _add(self, node: ast.AST, rule: str, message: str) -> None:
        self.violations.append(PolicyViolation(getattr(node, "lineno", 1), rule, message))

    # imports -----------------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not _module_allowed(alias.name):
                self._add(node, "forbidden-import", f"import of {alias.name!r} is not allowed")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self._add(node, "forbidden-import", "relative imports are not allowed")
            return
        for alias in node.names:
            if alias.name == "*":
                self._add(node, "forbidden-import", f"'from {module} import *' is not allowed")
            elif not (_module_allowed(module) or _module_allowed(f"{module}.{alias.name}")):
                self._add(node, "forbidden-import", f"import from {module!r} is not allowed")
            elif alias.name.startswith("_") and module != "__future__":
                self._add(node, "private-attribute", f"importing private name {alias.name!r} is not allowed")
            elif alias.name in FORBIDDEN_ATTRIBUTES or _imports_by_path(module, alias.name):
                self._add(node, "forbidden-import", f"importing {alias.name!r} from {module!r} is not allowed")

    # names and attributes ---------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_BUILTINS:
            self._add(node, "forbidden-call", f"{node.func.id}() is not allowed")
            self._reported_calls.add(id(node.func))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if id(node) in self._reported_calls:
            return
        if _is_dunder_like(node.id):
            self._add(node, "dunder", f"name {node.id!r} is not allowed")
        elif node.id in FORBIDDEN_BUILTINS:
            self._add(node, "forbidden-name", f"reference to {node.id!r} is not allowed")
        elif node.id == "nautilus_pyo3":
            self._add(node, "forbidden-name", "reference to 'nautilus_pyo3' is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if _is_dunder_like(attr):
            self._add(node, "dunder", f"attribute {attr!r} is not allowed")
        elif attr.startswith("_"):
            self._add(node, "private-attribute", f"private attribute {attr!r} is not allowed")
        elif attr in FORBIDDEN_ATTRIBUTES:
            self._add(node, "forbidden-attribute", f"attribute {attr!r} is not allowed")
        elif attr in ORDER_API:
            self._add(node, "direct-order", f"{attr!r} is not allowed: trade with go_long/go_short/go_flat")
        elif isinstance(node.ctx, ast.Store | ast.Del) and attr in PROTECTED_ATTRIBUTES:
            self._add(node, "protected-attribute", f"assigning to {attr!r} is not allowed (trusted member)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str | bytes):
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if "__" in text:
                self._add(node, "dunder", "string constants containing '__' are not allowed")

    # definitions ------------------------------------------------------------------------------------------
    def _check_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if _is_dunder_like(node.name):
            self._add(node, "dunder", f"defining {node.name!r} is not allowed")
        if not isinstance(node, ast.ClassDef):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg]:  # fmt: skip
                if arg is not None and _is_dunder_like(arg.arg):
                    self._add(arg, "dunder", f"argument name {arg.arg!r} is not allowed")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._check_def(node)
        self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._add(node, "async", "async functions are not allowed")
        self._check_def(node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._check_def(node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None and _is_dunder_like(node.arg):
            self._add(node, "dunder", f"keyword {node.arg!r} is not allowed")
        self.generic_visit(node)

    # statements -------------------------------------------------------------------------------------------
    def visit_Global(self, node: ast.Global) -> None:
        self._add(node, "global-statement", "'global' is not allowed")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self._add(node, "global-statement", "'nonlocal' is not allowed")

    def visit_Await(self, node: ast.Await) -> None:
        self._add(node, "async", "'await' is not allowed")
        self.generic_visit(node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self._add(node, "async", "'async for' is not allowed")
        self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self._add(node, "async", "'async with' is not allowed")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        caught = node.type
        names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if caught is None or any(isinstance(n, ast.Name) and n.id == "BaseException" for n in names):
            self._add(node, "broad-except", "bare 'except:' / 'except BaseException' is not allowed")
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        if _is_true_constant(node.test) and not _has_break(node):
            self._add(node, "infinite-loop", "'while True' without 'break' never ends")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Pow):
            exponent = node.right
            if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub | ast.UAdd):
                exponent = exponent.operand
            nested = isinstance(exponent, ast.BinOp) and isinstance(exponent.op, ast.Pow)
            big = (
                isinstance(exponent, ast.Constant)
                and isinstance(exponent.value, int | float)
                and not isinstance(exponent.value, bool)
                and abs(exponent.value) > _POWER_LIMIT
            )
            if nested or big:
                self._add(node, "huge-power", f"exponents above {_POWER_LIMIT} or nested powers are not allowed")
        self.generic_visit(node)


def check_policy(code: str) -> list[PolicyViolation]:
    """Every policy violation in ``code``, sorted by line; an empty list means the code may be run."""
    try:
        tree = parse_source(code)
    except SyntaxError as exc:
        return [PolicyViolation(exc.lineno or 1, "syntax", exc.msg or "invalid syntax")]
    checker = _Checker()
    checker.visit(tree)
    return sorted(checker.violations, key=lambda v: v.line)
