"""Entry point of ``python -m bench``; see bench/README.md."""

import signal
import sys

from .cli import main


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # clean up as for Ctrl-C


signal.signal(signal.SIGTERM, _terminate)
try:
    raise SystemExit(main())
except KeyboardInterrupt:  # the child is killed and the data folder removed on the way out
    print("interrupted", file=sys.stderr)
    raise SystemExit(130) from None
