"""Memory the guest hands back to its host while a run is timed (virtio-balloon page reporting).

On these VMs free guest memory is reported to the host, which takes the pages away; the next
touch of such a page waits for the host to supply a new one, several times slower than a
touch of memory the guest kept. The worker's scratch write before each run makes the memory a
run gets hot, but the reporter may take it away at any moment, in the middle of a run too.
Measured on a 1 GiB eager load: every run during which the reporter returned 100-460 MiB took
1.5-5x its usual time (``np.fromfile`` 0.21 s became 0.35-1.18 s), whichever contender it was.

The kernel of this machine class counts the memory reported in
``/sys/module/page_reporting/parameters/reported_kib``; where that file does not exist the
count reads 0 and no run is ever marked.
"""

from __future__ import annotations

from typing import Any

COUNTER = "/sys/module/page_reporting/parameters/reported_kib"
LIMIT = 32 << 20  # bytes returned during a run beyond which the run counts as disturbed


def returned() -> int:
    """Bytes the guest has reported to the host since boot (0 where it is not counted)."""
    try:
        with open(COUNTER) as counter:
            return int(counter.read()) * 1024
    except (OSError, ValueError):
        return 0


def lost_memory(run: dict[str, Any]) -> bool:
    """Did the host take back more than :data:`LIMIT` bytes while ``run`` was timed?

    >>> lost_memory({"returned": LIMIT + 1}), lost_memory({"returned": LIMIT}), lost_memory({})
    (True, False, False)
    """
    return bool(run.get("returned", 0) > LIMIT)
