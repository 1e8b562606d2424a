"""``python -m tools.emulator [flags]``; ``from tools.emulator.__main__ import main`` is safe (no side effect)."""

from tools.emulator.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
