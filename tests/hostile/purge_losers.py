"""Fitness fake through the engine's own API: forget losing round trips by purging their orders from the cache.

Goal (old evaluator): metrics rebuilt from the cache's fills skip every losing trade. Expected now: `tampered`.
"""
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.enums import OrderSide

from alpha_evolve.strategies.base import EvolvableStrategy


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.fast = ExponentialMovingAverage(3)
        self.slow = ExponentialMovingAverage(8)

    def decide(self, bar) -> None:
        buys = [o for o in self.cache.orders() if o.is_closed and o.side == OrderSide.BUY]
        sells = [o for o in self.cache.orders() if o.is_closed and o.side == OrderSide.SELL]
        for buy, sell in zip(buys, sells, strict=False):
            if sell.avg_px < buy.avg_px:
                self.cache.purge_order(buy.client_order_id)
                self.cache.purge_order(sell.client_order_id)
        if self.fast.value > self.slow.value:
            self.go_long()
        else:
            self.go_flat()
