#!/usr/bin/env sh
# Print a command that runs uv, installing uv with pip first when the machine has none.
# A fresh machine only has python3, pip and make; `python3 -m uv` works wherever pip put uv, even off PATH.
set -e
if command -v uv >/dev/null 2>&1; then
    echo uv
    exit 0
fi
if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "installing uv with pip ..." >&2
    python3 -m pip install --quiet uv >&2 \
        || python3 -m pip install --quiet --user uv >&2 \
        || python3 -m pip install --quiet --user --break-system-packages uv >&2  # Debian's PEP 668 python
fi
echo "python3 -m uv"
