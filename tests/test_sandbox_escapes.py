"""Escapes that get past an AST check, run for real in forked workers with the static policy switched off.

Each one worked before the restricted imports (module views) and the refusal of ``compile`` while armed: a
library module re-exporting builtins (``enum.bltns``), the root package bound by a dotted import
(``alpha_evolve.sandbox``, whose ``_ARMED`` flag disarms the audit hook), ``nautilus_trader.config.resolve_path``
and string annotations evaluated by ``typing.get_type_hints``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha_evolve.evaluator import StrategyEvaluator
from alpha_evolve.policy import check_policy
from tests._evaluator_helpers import SETTINGS, candidate, splits


@pytest.fixture(scope="module")
def no_static_policy() -> Iterator[StrategyEvaluator]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("alpha_evolve.policy.check_policy", lambda code: [])
        with StrategyEvaluator({"SYN": splits(n=200)}, SETTINGS, max_concurrent=2) as ev:  # child re-checks
            yield ev


def _escapes(target: Path) -> dict[str, tuple[str, str]]:
    """name -> (prelude, decide body); each would create ``target`` if it escaped."""
    return {
        "enum.bltns": ("import enum\n", f"enum.bltns.open({str(target)!r}, 'w').write('x')"),
        "disarm via root package": (
            "import enum\nimport alpha_evolve.strategies.base\n",
            f"enum.bltns.setattr(alpha_evolve.sandbox, '_ARMED', False)\nenum.bltns.open({str(target)!r}, 'w')",
        ),
        "module attribute assignment": (
            "import alpha_evolve.strategies.base\n",
            "alpha_evolve.strategies.base.math = None",
        ),
        "resolve_path": (
            "from nautilus_trader.config import resolve_path\n",
            "resolve_path('builtins:setattr')(resolve_path('alpha_evolve:sandbox'), '_ARMED', False)\n"
            f"resolve_path('os:system')('touch {target}')",
        ),
        "get_type_hints": (
            "import typing\n",
            "def f(x: 'op' + 'en(' + " + repr(repr(str(target))) + " + ', \"w\")'):\n    pass\n"
            "typing.get_type_hints(f)",
        ),
        "typing.operator": ("import typing\n", "typing.operator.attrgetter('x')"),
    }


@pytest.mark.parametrize("name", list(_escapes(Path("x"))))
def test_escape_is_refused_at_runtime(no_static_policy: StrategyEvaluator, tmp_path: Path, name: str) -> None:
    target = tmp_path / "escaped"
    prelude, body = _escapes(target)[name]
    result = no_static_policy.evaluate(candidate(body, prelude=prelude))
    assert result.status in ("policy", "import"), (result.status, result.error)
    assert not target.exists()
    assert no_static_policy.evaluate(candidate("self.go_long()")).status == "ok"  # still armed, sane


@pytest.mark.parametrize("name", list(_escapes(Path("x"))))
def test_escape_is_refused_statically_too(name: str) -> None:
    prelude, body = _escapes(Path("/tmp/never"))[name]
    if name in ("typing.operator", "module attribute assignment"):
        pytest.skip("the AST cannot tell a module from an object: refused by the module views at runtime")
    assert check_policy(candidate(body, prelude=prelude)), name


def test_allowed_dotted_import_still_works(no_static_policy: StrategyEvaluator) -> None:
    code = "import nautilus_trader.indicators\nimport math\n" + candidate(
        "x = nautilus_trader.indicators.ExponentialMovingAverage(3)\nif math.isfinite(1.0):\n    self.go_long()"
    )
    assert not check_policy(code)
    result = no_static_policy.evaluate(code)
    assert result.status == "ok", result.error
