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
