"""New processes once past the Python guards: fork, subprocess, exec, signals to the parent. TARGET is replaced by
the test with a path a spawned process would create."""
from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy

TARGET = "/tmp/never"


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(3)

    def decide(self, bar) -> None:
        import os
        import signal
        import subprocess

        attempts = [
            lambda: subprocess.run(["touch", TARGET]),
            lambda: os.posix_spawn("/usr/bin/touch", ["touch", TARGET], {}),
            lambda: os.fork(),
            lambda: os.kill(os.getppid(), signal.SIGKILL),
            lambda: os.kill(-1, signal.SIGKILL),
            lambda: os.execv("/usr/bin/touch", ["touch", TARGET]),
        ]
        for attempt in attempts:
            try:
                if attempt() == 0:
                    os._exit(0)
            except Exception as exc:
                print("refused:", type(exc).__name__)
        self.go_long()
