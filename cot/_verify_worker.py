"""math-verify worker: reads ``[a, b]`` JSON lines on stdin, answers ``{"ok": bool}`` or ``{"error": str}``.

Run as ``python -m cot._verify_worker`` by :mod:`cot._answers`, which enforces a hard timeout from outside.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from math_verify import parse, verify

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            a, b = json.loads(line)
            pa, pb = parse(f"${a}$"), parse(f"${b}$")
            reply = {"ok": bool(pa) and bool(pb) and bool(verify(pa, pb))}
        except Exception as exc:
            reply = {"error": repr(exc)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
