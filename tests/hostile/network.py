"""Network by every route once past the Python guards: TCP connect, UDP send, a Unix socket. PORT is replaced by
the test with a listening port on 127.0.0.1 that must never see a connection."""
from nautilus_trader.indicators import ExponentialMovingAverage

from alpha_evolve.strategies.base import EvolvableStrategy

PORT = 9


class Candidate(EvolvableStrategy):
    def setup_indicators(self) -> None:
        self.ema = ExponentialMovingAverage(3)

    def decide(self, bar) -> None:
        import socket

        attempts = [
            lambda: socket.create_connection(("127.0.0.1", PORT), timeout=1).sendall(b"leak"),
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", PORT)),
            lambda: socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock"),
        ]
        for attempt in attempts:
            try:
                attempt()
            except Exception as exc:
                print("refused:", type(exc).__name__)
        self.go_long()
