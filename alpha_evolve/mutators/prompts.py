"""Prompts for the LLM mutator (and the reference text the Claude Code subagent gets).

The system prompt is fixed for a run so the API can cache it across every mutation; everything that changes
per request (parent, metrics, inspirations, error of the previous attempt) is in the user message. Only
train-period metrics reach a prompt: ``base.train_metrics`` filters the names, so validation or holdout figures
cannot leak into selection pressure through the LLM. What the run rewards (metric, direction, period) comes from
the run's config through ``fitness_spec`` into every request; no prompt names a fitness of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alpha_evolve.indicator_catalogue import prompt_table
from alpha_evolve.mutators.base import PROMPT_METRICS, FitnessSpec, MutationRequest, train_metrics

BLOCK_START = "# === EVOLVE-BLOCK: {name} ==="
BLOCK_END = "# === END EVOLVE-BLOCK ==="

# Native NautilusTrader 1.221 indicators verified on bars (FIELD_NOTES): constructor and the attributes to read.
# The offline mutator builds from the same catalogue (``indicator_catalogue``): one list of what may be used.
INDICATORS: dict[str, tuple[str, str]] = prompt_table()

HELPERS = """\
- `self.go_long()`, `self.go_short()`, `self.go_flat()`: the only way to trade. Market order at the bar's close,
  sized from `trade_fraction` of equity; calling go_long while already long does nothing. `go_short()` is a no-op
  unless `self.allow_short` is True (check it before shorting).
- `self.is_long`, `self.is_short`, `self.is_flat` (properties, bool) and `self.bars_seen` (int).
- `decide(bar)` is called on every bar once ALL indicators assigned to `self` in `setup_indicators` are
  initialized; the base class registers them for you. Prices: `bar.close.as_double()`, `bar.high.as_double()`,
  `bar.low.as_double()`, `bar.open.as_double()`, volume `bar.volume.as_double()`.
- You may keep small state on `self` (e.g. `self.entry_price = None` in the indicators block) and plain local
  variables; do not define `__init__`, methods, classes or imports."""

RULES = """\
- Rewrite only the bodies of the EVOLVE-BLOCKs you are asked for; everything outside them is fixed.
- Use only the native NautilusTrader indicators listed below — no hand-written indicator maths over price
  histories. If the module does not import one you need, write `from nautilus_trader.indicators import Name` as
  the first line of the block that constructs it.
- Allowed: arithmetic, comparisons, `if`/`elif`/`else`, bounded loops, `min`/`max`/`abs`/`round`, the `math`
  and `statistics` modules. Forbidden (the candidate is rejected by a static policy): imports other than
  `nautilus_trader.indicators`/`math`/`statistics`/`collections`, `open`/`eval`/`exec`/`getattr`/`setattr`/`type`,
  file, process, network or clock access (`os`, `time`, `datetime`, ...), `_private` or `__dunder__` names,
  order methods other than go_long/go_short/go_flat, assigning to base-class members (`self.trade_fraction`,
  `self.is_long`, ...), `global`, `async`, `while True` without `break`, bare `except:`.
- Keep the strategy's ideas intact enough to still trade: a change that never trades scores zero.
- Look for robustness, not curve fitting: the program is judged on train metrics now and on unseen periods later."""

OUTPUT_FORMAT = """\
Answer with one short paragraph of reasoning (at most 5 sentences), then the new bodies in ONE ```python fenced
block, each between its markers, unindented, for example:

```python
# === EVOLVE-BLOCK: {first} ===
<new body>
# === END EVOLVE-BLOCK ===
```

Return only the blocks you changed (at least one). A block you omit keeps the parent's body. Returning the
parent's bodies unchanged counts as a failed mutation."""

FOCUS_HINTS: tuple[str, ...] = (
    "the entry condition (when to go long or short)",
    "the exit rule (when to go flat)",
    "a regime filter (trend strength, volatility or efficiency) that avoids bad periods",
    "the choice of indicators and their periods",
    "risk control: exit on adverse moves measured with AverageTrueRange or a channel",
    "combining two signals that confirm each other",
    "simplifying the logic so it generalises better",
)


def indicator_catalogue() -> str:
    return "\n".join(f"- {name}{ctor} -> {out}" for name, (ctor, out) in INDICATORS.items())


def fitness_spec(config: Any) -> FitnessSpec:
    """The fitness of a run (a ``RunConfig`` or an ``EvolutionConfig``), as mutators must be told it."""
    from alpha_evolve.metric_names import LOWER_IS_BETTER_METRICS

    ev = getattr(config, "evolution", config)
    metric = str(ev.fitness_metric)
    what = {"InfoRatio": "InfoRatio (information ratio: excess return over buy-and-hold on the same bars, per "
                         "unit of tracking error)",
            "Calmar": "Calmar (CAGR / MaxDD)", "MaxDD": "MaxDD (maximum drawdown, a positive fraction)"}
    name = what.get(metric, metric)
    folds = int(getattr(ev, "fitness_folds", 1) or 1)
    if folds > 1:
        how = "worst" if getattr(ev, "fitness_fold_aggregate", "mean") == "worst" else "mean"
        period = f"train ({folds} folds)"
        text = f"the {how} {name} over {folds} contiguous folds of the train period"
    else:
        period = "train"
        text = f"{name} on the train period"
    train_end = str(getattr(getattr(config, "backtest", None), "train_end", "") or "")
    if train_end:
        text += f" (up to {train_end})"
    return FitnessSpec(metric=metric, maximize=metric not in LOWER_IS_BETTER_METRICS, period=period, description=text)


def system_prompt(fitness: FitnessSpec | None = None) -> str:
    """The run's fixed instructions; ``fitness`` (from the run's config) says what is rewarded."""
    fit = fitness or FitnessSpec()
    return (
        "You improve algorithmic trading strategies for NautilusTrader by rewriting marked EVOLVE-BLOCK regions "
        "of a Python strategy class, as one step of an evolutionary search (AlphaEvolve-style).\n\n"
        f"## Rules\n{RULES}\n\n## Base-class helpers\n{HELPERS}\n\n"
        f"## Native indicators (from nautilus_trader.indicators)\n{indicator_catalogue()}\n\n"
        f"## Fitness\nThis run selects programs by {fit.sentence()}. Every other figure is context.\n\n"
        "## Metrics\nCalmar = CAGR / MaxDD, MaxDD is a positive fraction (0.25 = 25 % drawdown), "
        "WinRate is the fraction of profitable round trips, Exposure the fraction of bars in the market. "
        "All figures are from the training period only."
    )


def format_metrics(metrics: Mapping[str, float]) -> str:
    m = train_metrics(metrics)
    if not m:
        return "(not evaluated yet)"
    parts = []
    for name in PROMPT_METRICS:
        if name not in m:
            continue
        v = m[name]
        if name in ("MaxDD", "CAGR", "TotalReturn", "WinRate", "Exposure", "AnnVol"):
            parts.append(f"{name} {v:.1%}")
        elif name == "Trades":
            parts.append(f"{name} {v:.0f}")
        else:
            parts.append(f"{name} {v:.3f}")
    return ", ".join(parts)


def format_blocks(blocks: Mapping[str, str], names: tuple[str, ...] | None = None) -> str:
    out = []
    for name, body in blocks.items():
        if names is not None and name not in names:
            continue
        out.append(f"{BLOCK_START.format(name=name)}\n{body.rstrip()}\n{BLOCK_END}")
    return "\n".join(out)


def user_prompt(request: MutationRequest, *, focus: str | None = None, rejected: Mapping[str, str] | None = None,
                max_inspirations: int = 3) -> str:
    """The per-mutation message. ``rejected`` holds the bodies of the previous attempt that failed validation."""
    names = request.blocks_to_change
    sections = [
        "## Parent program",
        f"Train metrics: {format_metrics(request.parent_metrics)}",
        "```python\n" + request.parent_code.rstrip() + "\n```",
        "Its current block bodies:",
        "```python\n" + format_blocks(request.parent_blocks) + "\n```",
    ]
    inspirations = [i for i in request.inspirations if i.blocks][:max_inspirations]
    if inspirations:
        sections.append("## Strong programs from the population (for ideas; do not copy them verbatim)")
        for n, insp in enumerate(inspirations, 1):
            sections.append(f"### Inspiration {n} — train metrics: {format_metrics(insp.metrics)}")
            sections.append("```python\n" + format_blocks(insp.blocks) + "\n```")
    wasted = [sib for sib in request.siblings if sib.outcome in ("duplicate", "no_trades")][-2:]
    if wasted:
        sections.append(
            f"## Earlier changes to this parent that bought nothing\n{len(wasted)} recent change(s) to this parent "
            "traded exactly like an existing program or never traded at all (each a backtest spent on nothing). "
            "Do not make a change like these; change when the strategy trades. Their bodies were:\n"
            + "\n".join("```python\n" + format_blocks(dict(sib.blocks), names) + "\n```" for sib in wasted))
    if request.guidance.strip():
        sections.append("## Guidance from the researcher\n" + request.guidance.strip())
    fit = request.fitness
    better = "higher" if fit.maximize else "lower"
    task = (f"## Task\nWrite improved bodies for: {', '.join(names)}. The fitness is {fit.sentence()}: aim for "
            f"a {better} {fit.metric} that would hold up on unseen periods.")
    if not request.allow_short:
        task += " Shorting is disabled in this run: go_short() does nothing, so do not spend the change on it."
    if focus:
        task += f" This time concentrate on {focus}."
    sections.append(task)
    if request.previous_error:
        retry = ("## Your previous attempt was rejected\n"
                 f"Error: {request.previous_error.strip()}\n"
                 "Fix this problem; keep the rest of your idea if it was sound.")
        if rejected:
            retry += "\nThe rejected bodies were:\n```python\n" + format_blocks(rejected) + "\n```"
        sections.append(retry)
    sections.append("## Output format\n" + OUTPUT_FORMAT.format(first=names[0] if names else "name"))
    return "\n\n".join(sections) + "\n"
