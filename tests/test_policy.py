"""The static policy refuses escapes with the right rule and line, and accepts real strategy code."""

from __future__ import annotations

import textwrap

import pytest

from alpha_evolve.policy import PolicyViolation, check_policy
from alpha_evolve.strategies import list_seeds, seed_source

# (snippet, rule, line): the offending construct is always on the snippet's line `line`.
MALICIOUS = [
    ("x = 1\nopen('/tmp/pwn', 'w').write('x')\n", "forbidden-call", 2),
    ("with open('f') as fh:\n    pass\n", "forbidden-call", 1),
    ("x = 1\n__import__('os').system('id')\n", "forbidden-call", 2),
    ("y = ().__class__.__base__.__subclasses__()\n", "dunder", 1),
    ("import socket\n", "forbidden-import", 1),
    ("from socket import socket as s\n", "forbidden-import", 1),
    ("import math\nimport subprocess\n", "forbidden-import", 2),
    ("from subprocess import run\n", "forbidden-import", 1),
    ("getattr(__builtins__, 'open')('x')\n", "forbidden-call", 1),
    ("import time\nt = time.time()\n", "forbidden-import", 1),
    ("t = math.time.time()\n", "forbidden-attribute", 1),
    ("eval('1+1')\n", "forbidden-call", 1),
    ("\n\nexec('import os')\n", "forbidden-call", 3),
    ("import nautilus_trader.persistence\n", "forbidden-import", 1),
    ("from nautilus_trader.persistence.catalog import ParquetDataCatalog\n", "forbidden-import", 1),
    ("from nautilus_trader.core import nautilus_pyo3\n", "forbidden-import", 1),
    ("f = (lambda: eval)()\n", "forbidden-name", 1),
    ("g = lambda e=exec: e('x')\n", "forbidden-name", 1),
    ("h = [c for c in ().__class__.__mro__]\n", "dunder", 1),
    ("k = 'abc'.__len__\n", "dunder", 1),
    ("s = '{0.__class__}'.format(1)\n", "dunder", 1),
    ("import os.path\n", "forbidden-import", 1),
    ("from . import base\n", "forbidden-import", 1),
    ("from math import *\n", "forbidden-import", 1),
    ("import importlib\n", "forbidden-import", 1),
    ("x = self.portfolio.os.environ\n", "forbidden-attribute", 1),
    ("d = datetime.datetime.now()\n", "forbidden-attribute", 1),
    ("def f():\n    global X\n", "global-statement", 2),
    ("async def f():\n    pass\n", "async", 1),
    ("try:\n    pass\nexcept:\n    pass\n", "broad-except", 3),
    ("try:\n    pass\nexcept (ValueError, BaseException):\n    pass\n", "broad-except", 3),
    ("while True:\n    x = 1\n", "infinite-loop", 1),
    ("x = 10 ** 10 ** 10\n", "huge-power", 1),
    ("self.submit_order(order)\n", "direct-order", 1),
    ("o = self.order_factory.market()\n", "direct-order", 1),
    ("self.on_stop = lambda: None\n", "protected-attribute", 1),
    ("self.msgbus.send('x', None)\n", "direct-order", 1),
    ("self.stop()\n", "direct-order", 1),
    ("self.trade_fraction = 5.0\n", "protected-attribute", 1),
    ("self._last_close = 1e9\n", "private-attribute", 1),
    ("class A:\n    def __init__(self):\n        pass\n", "dunder", 2),
    ("def f(**kw):\n    pass\nf(__x=1)\n", "dunder", 3),
    ("x = type(1)\n", "forbidden-call", 1),
    ("v = vars()\n", "forbidden-call", 1),
    ("b = breakpoint\n", "forbidden-name", 1),
    ("def f(:\n", "syntax", 1),
]


@pytest.mark.parametrize(("snippet", "rule", "line"), MALICIOUS)
def test_malicious_snippet_is_refused(snippet: str, rule: str, line: int) -> None:
    violations = check_policy(snippet)
    assert violations, f"accepted: {snippet!r}"
    assert violations[0].line == line, violations
    assert rule in {v.rule for v in violations if v.line == line}, violations


def test_violation_string_names_line_and_rule() -> None:
    violations = check_policy("x = 1\n\n" + "y = 2\n" * 9 + "open('f')\n")
    assert [str(v) for v in violations] == ["line 12: [forbidden-call] open() is not allowed"]
    assert isinstance(violations[0], PolicyViolation)


def test_every_violation_is_reported_in_line_order() -> None:
    code = "import os\nx = eval('1')\ny = ().__class__\n"
    assert [(v.line, v.rule) for v in check_policy(code)] == [
        (1, "forbidden-import"),
        (2, "forbidden-call"),
        (3, "dunder"),
    ]


def test_checked_code_is_never_executed(tmp_path) -> None:
    marker = tmp_path / "ran"
    check_policy(f"open({str(marker)!r}, 'w').write('x')\n")
    assert not marker.exists()


def test_while_true_with_break_is_allowed() -> None:
    assert check_policy("while True:\n    if x:\n        break\n") == []


@pytest.mark.parametrize("name", list_seeds())
def test_seeds_pass_the_policy(name: str) -> None:
    assert check_policy(seed_source(name)) == []


LEGITIMATE = textwrap.dedent(
    '''
    """An RSI strategy with helpers, as an LLM might write it."""

    from __future__ import annotations

    import math
    from collections import deque
    from statistics import mean

    from nautilus_trader.indicators import RelativeStrengthIndex, SimpleMovingAverage
    from nautilus_trader.indicators.volatility import AverageTrueRange
    from nautilus_trader.model.data import Bar
    from nautilus_trader.model.enums import OrderSide

    from alpha_evolve.strategies.base import EvolvableStrategy


    def clip(value: float, low: float, high: float) -> float:
        return max(low, min(high, value))


    class RsiStrategy(EvolvableStrategy):
        def setup_indicators(self) -> None:
            self.rsi = RelativeStrengthIndex(14)
            self.trend = SimpleMovingAverage(50)
            self.atr = AverageTrueRange(14)
            self.closes = deque(maxlen=20)

        def decide(self, bar: Bar) -> None:
            close = bar.close.as_double()
            self.closes.append(close)
            spread = clip(self.atr.value / close, 0.0, 1.0)
            if self.rsi.value < 0.3 and close > self.trend.value and not math.isnan(spread):
                self.go_long()
            elif self.rsi.value > 0.7 or close < mean(self.closes) * (1 - 2 ** 3 / 100):
                self.go_flat()
            side = OrderSide.BUY
            count = 0
            while True:
                count += 1
                if count > 3:
                    break
            try:
                ratio = close / self.trend.value
            except ZeroDivisionError:
                ratio = 1.0
            self.last_ratio = ratio if side == OrderSide.BUY else -ratio
    '''
)


def test_legitimate_strategy_code_is_accepted() -> None:
    assert check_policy(LEGITIMATE) == []
