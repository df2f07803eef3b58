"""A fixed CPU share for one benchmark process: a cgroup with a CPU quota.

cgroup v1 (``/sys/fs/cgroup/cpu/NAME``: ``cpu.cfs_period_us`` and ``cpu.cfs_quota_us``) or v2
(``/sys/fs/cgroup/NAME/cpu.max``). Needs root; when the groups cannot be written the process
runs unconfined and ``note`` says why, so a report never passes an unconfined run off as a
confined one. ``remove`` deletes the group (its processes must have exited or been moved).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

__all__ = ["CpuBox"]

V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CpuBox:
    """``cores`` CPUs' worth of time per period for the processes added (e.g. 0.25)."""

    def __init__(self, name: str, cores: float | None) -> None:
        self.name = name
        self.cores = cores
        self.path: Path | None = None
        self.version: str | None = None
        self.note: str | None = None
        if cores is None:
            self.note = "unconfined (no CPU quota asked)"
            return
        quota = int(PERIOD_US * cores)
        try:
            if (V1 / "cpu.cfs_quota_us").exists():
                path = V1 / name
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
                self.version = "v1"
            elif "cpu" in (V2 / "cgroup.controllers").read_text().split():
                with contextlib.suppress(OSError):
                    (V2 / "cgroup.subtree_control").write_text("+cpu\n")
                path = V2 / name
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
                self.version = "v2"
            else:
                raise OSError("no cgroup cpu controller found")
        except OSError as exc:
            self.note = f"unconfined: cannot create a CPU cgroup ({exc})"
            return
        self.path = path

    @property
    def confined(self) -> bool:
        return self.path is not None

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group."""
        if self.path is None:
            return
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            self.note = f"unconfined: cannot move pid {pid} into {self.path} ({exc})"
            self.remove()

    def stats(self) -> dict[str, Any]:
        """Throttling counters so far: periods, throttled periods, throttled seconds."""
        out: dict[str, Any] = {
            "cgroup": self.version,
            "quota_cores": self.cores if self.confined else None,
            "note": self.note,
        }
        if self.path is None:
            return out
        with contextlib.suppress(OSError, ValueError):
            raw = dict(
                line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line
            )
            out["periods"] = int(raw.get("nr_periods", 0))
            out["throttled_periods"] = int(raw.get("nr_throttled", 0))
            if "throttled_time" in raw:  # v1, ns
                out["throttled_s"] = round(int(raw["throttled_time"]) / 1e9, 3)
            elif "throttled_usec" in raw:  # v2
                out["throttled_s"] = round(int(raw["throttled_usec"]) / 1e6, 3)
        return out

    def remove(self) -> None:
        """Delete the group (moving any process still in it back to the root group)."""
        if self.path is None:
            return
        path, self.path = self.path, None
        root = V1 if self.version == "v1" else V2
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (root / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            os.rmdir(path)
