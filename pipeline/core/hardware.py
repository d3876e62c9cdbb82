"""What the CPU offers that the numeric paths choose by."""

from __future__ import annotations

from pathlib import Path


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matrix support (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
