"""Numbers as the report writes them (Markdown and plot labels)."""

from __future__ import annotations


def seconds(value: float) -> str:
    """Seconds with about three significant digits."""
    a = abs(value)
    return f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 1 else f"{value:#.3g}"


def pct(share: float) -> str:
    """A share as a percentage, with two significant digits when under 0.1% (GPU rows'
    efficiency is a few thousandths of a percent; "0.0%" would hide it)."""
    if share < 0.001:
        return f"{share * 100:#.2g}%"
    return f"{share:.2%}" if 0.999 < share < 1 else f"{share:.1%}"


def ratio(value: float | None) -> str:
    """A ratio: two decimals, or two significant digits under 0.1 ("0.0019x", not "0.00x")."""
    if value is None:
        return "—"
    return f"{value:.2f}x" if abs(value) >= 0.1 else f"{value:#.2g}x"


def seconds_ci(value: float, low: float | None, high: float | None) -> str:
    """s/epoch with its 95% interval: "1.52 s (1.44-1.61)"; without one, "1.52 s"."""
    if low is None or high is None:
        return f"{seconds(value)} s"
    return f"{seconds(value)} s ({seconds(low)}-{seconds(high)})"


def speedup(value: float) -> str:
    """A speed-up as the tables give it: "4.7x", "11x", "0.52x"."""
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def speedup_ci(value: float | None, low: float | None, high: float | None) -> str:
    """A speed-up with its 95% interval: "4.7x (4.1-5.3)"; "—" when there is none."""
    if value is None:
        return "—"
    if low is None or high is None or low == high:  # the baseline against itself: exactly 1
        return speedup(value)
    return f"{speedup(value)} ({speedup(low).rstrip('x')}-{speedup(high).rstrip('x')})"
