"""Peak memory of a run: GPU allocator peak, or the process's peak resident set on Linux."""

from __future__ import annotations

from pathlib import Path

import torch


class PeakMemory:
    """Resets the peak counter at construction; peak_mb() reads it (MiB)."""

    def __init__(self):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            try:  # writing 5 resets the kernel's high-water mark of this process (VmHWM)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_mb(self) -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
