"""attrs validators that raise ``ValueError`` naming the field and the expected form."""

from __future__ import annotations

import math
import numbers


def positive(instance, attribute, value) -> None:
    """An integer >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be an integer >= 1, got {value!r}")


def non_negative(instance, attribute, value) -> None:
    """An integer >= 0 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be an integer >= 0, got {value!r}"
        )


def positive_float(instance, attribute, value) -> None:
    """A real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be a finite number > 0, got {value!r}"
        )


def non_negative_float(instance, attribute, value) -> None:
    """A real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be a finite number >= 0, got {value!r}"
        )


def open_unit_interval(instance, attribute, value) -> None:
    """A real number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be in the open interval (0, 1), "
            f"got {value!r}"
        )


def unit_interval(instance, attribute, value) -> None:
    """A real number in [0, 1) (a probability that must leave something: dropout, smoothing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a number in [0, 1), got {value!r}")


def probability(instance, attribute, value) -> None:
    """A real number in [0, 1] (a probability: random erasing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a probability in [0, 1], got {value!r}")


def area_range(instance, attribute, value) -> None:
    """Two numbers ``(low, high)`` with ``0 < low <= high <= 1`` (a crop's share of the frame)."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value) and 0 < value[0] <= value[1] <= 1
    if not ok:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be two numbers low,high with "
                         f"0 < low <= high <= 1 (shares of the frame's area), got {value!r}")


def seed(instance, attribute, value) -> None:
    """An integer from 0 to 2**32 - 1, what every random generator a run seeds accepts."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2 ** 32:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be an integer from 0 to 4294967295 "
                         f"(2**32 - 1), got {value!r}")
