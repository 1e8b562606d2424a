"""The ``dsr`` console script of a checkout: the deployed commands of ``shared.cli`` plus ``dsr emulator``.

The emulator is a developer tool that is never deployed, so the deployed CLI cannot import it; this
launcher (installed as ``dsr`` by ``pyproject.toml``) adds it.
"""

from __future__ import annotations

import sys

from shared import cli


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emulator"]:  # the emulator parses its own flags
        # imported here: every other command (``dsr process`` above all) would pay ~0.06-0.1 s of CPU for it
        from tools.emulator.__main__ import main as emulator_main

        return int(emulator_main(args[1:]) or 0)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
