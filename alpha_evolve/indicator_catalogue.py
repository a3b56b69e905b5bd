"""The one catalogue of native NautilusTrader indicators that mutators may use.

The LLM prompt renders it (constructor and the attributes to read) and the offline mutator builds new logic from
it (families, parameter ranges, conditions), so both search the same space: an indicator the prompt does not
offer is never written by the offline mutator either, and a new entry here reaches both at once.

``conditions`` are expressions over ``{a}`` (the indicator's attribute on ``self``) and ``{close}`` (the bar's
close), each with a parameter range for its threshold ``{t}``; ``role`` says what a condition means when it gates
an entry: a *regime* (trend strength, volatility, efficiency: "is this a market to trade?") or a *signal*
(direction: "is now the time to be long?").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Param:
    """An integer period or a float multiplier, with the range new values are drawn from."""

    low: float
    high: float
    integer: bool = True


@dataclass(frozen=True)
class Condition:
    """A boolean expression gating an entry: ``text`` over ``{a}``, ``{close}`` and threshold ``{t}``."""

    text: str
    role: str  # "trend" | "volatility" | "efficiency" (regimes) or "signal" (direction)
    threshold: Param | None = None
    style: str = "trend"  # signals: "trend" (with the move) or "reversal" (against it)


@dataclass(frozen=True)
class Indicator:
    name: str
    ctor: str
    outputs: str
    family: str
    params: tuple[Param, ...] = ()
    conditions: tuple[Condition, ...] = field(default=())


_P = Param
_PERIOD = _P(5, 60)
_LONG = _P(20, 120)

CATALOGUE: tuple[Indicator, ...] = (
    Indicator("SimpleMovingAverage", "(period)", ".value", "moving_average", (_LONG,),
              (Condition("{close} > self.{a}.value", "signal"),)),
    Indicator("ExponentialMovingAverage", "(period)", ".value", "moving_average", (_LONG,),
              (Condition("{close} > self.{a}.value", "signal"),)),
    Indicator("DoubleExponentialMovingAverage", "(period)", ".value", "moving_average", (_LONG,)),
    Indicator("WeightedMovingAverage", "(period)", ".value", "moving_average", (_LONG,)),
    Indicator("HullMovingAverage", "(period)", ".value", "moving_average", (_LONG,),
              (Condition("{close} > self.{a}.value", "signal"),)),
    Indicator("WilderMovingAverage", "(period)", ".value", "moving_average", (_LONG,)),
    Indicator("AdaptiveMovingAverage", "(period_er, period_alpha_fast, period_alpha_slow)", ".value",
              "moving_average", (_P(5, 20), _P(2, 4), _P(20, 40)),
              (Condition("{close} > self.{a}.value", "signal"),)),
    Indicator("VariableIndexDynamicAverage", "(period)", ".value", "moving_average", (_LONG,)),
    Indicator("RelativeStrengthIndex", "(period)", ".value in 0..1 (NOT 0..100: oversold 0.3, overbought 0.7)",
              "momentum", (_P(5, 30),),
              (Condition("self.{a}.value > {t}", "signal", _P(0.5, 0.6, False)),
               Condition("self.{a}.value < {t}", "signal", _P(0.25, 0.4, False), "reversal"))),
    Indicator("RateOfChange", "(period, use_log=False)", ".value (fraction)", "momentum", (_P(5, 60),),
              (Condition("self.{a}.value > 0", "signal"),)),
    Indicator("ChandeMomentumOscillator", "(period)", ".value in -100..100", "momentum", (_P(5, 30),),
              (Condition("self.{a}.value > 0", "signal"),
               Condition("self.{a}.value < {t}", "signal", _P(-60, -30, False), "reversal"))),
    Indicator("Stochastics", "(period_k, period_d)", ".value_k, .value_d in 0..100", "oscillator",
              (_P(5, 20), _P(3, 5)),
              (Condition("self.{a}.value_k > self.{a}.value_d", "signal"),
               Condition("self.{a}.value_k < {t}", "signal", _P(15, 30, False), "reversal"))),
    Indicator("CommodityChannelIndex", "(period, scalar=0.015)", ".value", "oscillator", (_P(10, 40),),
              (Condition("self.{a}.value > 0", "signal"),
               Condition("self.{a}.value < {t}", "signal", _P(-150, -80, False), "reversal"))),
    Indicator("EfficiencyRatio", "(period)", ".value in 0..1", "efficiency", (_P(10, 40),),
              (Condition("self.{a}.value > {t}", "efficiency", _P(0.15, 0.45, False)),)),
    Indicator("RelativeVolatilityIndex", "(period, scalar=100.0)", ".value", "volatility", (_P(10, 30),)),
    Indicator("PsychologicalLine", "(period)", ".value", "oscillator", (_P(10, 30),)),
    Indicator("MovingAverageConvergenceDivergence", "(fast_period, slow_period)", ".value (fast < slow)",
              "momentum", (_P(6, 15), _P(20, 40)),
              (Condition("self.{a}.value > 0", "signal"),)),
    Indicator("ArcherMovingAveragesTrends", "(fast_period, slow_period, signal_period)",
              ".long_run, .short_run (bool)", "trend", (_P(5, 10), _P(20, 40), _P(3, 8))),
    Indicator("AroonOscillator", "(period)", ".aroon_up, .aroon_down, .value", "trend", (_P(10, 50),),
              (Condition("self.{a}.value > {t}", "trend", _P(0, 50, False)),
               Condition("self.{a}.aroon_up > self.{a}.aroon_down", "signal"))),
    Indicator("DirectionalMovement", "(period)", ".pos, .neg", "trend", (_P(10, 30),),
              (Condition("self.{a}.pos > self.{a}.neg", "signal"),)),
    Indicator("LinearRegression", "(period)", ".slope, .intercept, .R2, .value", "trend", (_P(10, 60),),
              (Condition("self.{a}.slope > 0", "signal"),
               Condition("self.{a}.R2 > {t}", "trend", _P(0.2, 0.6, False)))),
    Indicator("Bias", "(period)", ".value", "oscillator", (_P(10, 40),)),
    Indicator("Swings", "(period)", ".direction (1/-1), .high_price, .low_price, .since_high, .since_low",
              "trend", (_P(3, 10),)),
    Indicator("AverageTrueRange", "(period)", ".value (price units)", "volatility", (_P(10, 30),),
              (Condition("self.{a}.value < {t} * {close}", "volatility", _P(0.008, 0.025, False)),)),
    Indicator("BollingerBands", "(period, k)", ".upper, .middle, .lower", "channel", (_P(10, 40), _P(1.5, 2.5, False)),
              (Condition("{close} > self.{a}.middle", "signal"),
               Condition("{close} < self.{a}.lower", "signal", None, "reversal"))),
    Indicator("DonchianChannel", "(period)", ".upper, .middle, .lower", "channel", (_P(10, 60),),
              (Condition("{close} > self.{a}.middle", "signal"),)),
    Indicator("KeltnerChannel", "(period, k_multiplier)", ".upper, .middle, .lower", "channel",
              (_P(10, 40), _P(1.0, 2.5, False)),
              (Condition("{close} > self.{a}.middle", "signal"),)),
    Indicator("KeltnerPosition", "(period, k_multiplier)", ".value", "channel", (_P(10, 40), _P(1.0, 2.5, False))),
    Indicator("VerticalHorizontalFilter", "(period)", ".value", "trend", (_P(10, 40),)),
    Indicator("VolatilityRatio", "(fast_period, slow_period)", ".value", "volatility", (_P(5, 15), _P(30, 60)),
              (Condition("self.{a}.value < {t}", "volatility", _P(0.8, 1.2, False)),)),
    Indicator("OnBalanceVolume", "(period=0)", ".value", "volume"),
    Indicator("VolumeWeightedAveragePrice", "()", ".value", "volume"),
    Indicator("KlingerVolumeOscillator", "(fast_period, slow_period, signal_period)", ".value", "volume",
              (_P(20, 40), _P(45, 60), _P(8, 15))),
    Indicator("Pressure", "(period)", ".value, .value_cumulative", "volume", (_P(10, 30),)),
)

BY_NAME: dict[str, Indicator] = {i.name: i for i in CATALOGUE}
REGIME_ROLES: tuple[str, ...] = ("trend", "volatility", "efficiency")


def prompt_table() -> dict[str, tuple[str, str]]:
    """Name -> (constructor, outputs): what the LLM prompt lists."""
    return {i.name: (i.ctor, i.outputs) for i in CATALOGUE}


def conditions(role: str | tuple[str, ...]) -> list[tuple[Indicator, Condition]]:
    """Every (indicator, condition) whose role is ``role`` (or one of them), in catalogue order."""
    roles = (role,) if isinstance(role, str) else role
    return [(i, c) for i in CATALOGUE for c in i.conditions if c.role in roles]
