"""What a lost GPU-hour costs.

Defaults are on-demand prices per GPU-hour as of 2026 (strandwatch's field
reference, gathered from public price lists of neoclouds and hyperscalers):

=========  ===================  =======
model      on-demand range      default
=========  ===================  =======
H100       $2.7 - $6.9          $3.00
H200       $4.0 - $6.3          $4.50
B200       $6.0 - $8.6          $7.00
A100 80GB  $1.4 - $3.4          $2.00
=========  ===================  =======

Each default sits in the lower part of its range, near what a large committed
customer pays: loss is reported at what the capacity is worth, not at list
price. Models not in the table use ``FALLBACK_PER_GPU_HOUR`` (the H100 price).
Every site should set its own: ``--price-per-gpu-hour`` replaces every model's
price, ``per_gpu_hour`` replaces single models. With ``per_kwh`` the energy the
stranded GPUs burned while waiting (their power draw times the lost share of
each interval) is added on top, for owners who price capacity as capital plus power.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_PER_GPU_HOUR: Mapping[str, float] = {"H100": 3.00, "H200": 4.50, "B200": 7.00, "A100": 2.00}
FALLBACK_PER_GPU_HOUR = 3.00

_MODEL = re.compile(r"\b(GB200|B200|B100|H200|H100|H800|A100|A800|L40S|L40|L4)\b", re.IGNORECASE)


def gpu_model_key(name: str) -> str:
    """The table key of a GPU name: ``"NVIDIA H100 80GB HBM3"`` -> ``"H100"``; unknown names as given."""
    match = _MODEL.search(name or "")
    return match.group(1).upper() if match else (name or "").strip()


@dataclass(frozen=True, slots=True)
class Prices:
    """$/GPU-hour per GPU model, an optional override for every model, optional $/kWh."""

    per_gpu_hour: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PER_GPU_HOUR))
    override_per_gpu_hour: float | None = None
    per_kwh: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("override_per_gpu_hour", self.override_per_gpu_hour), ("per_kwh", self.per_kwh)):
            if value is not None and not value >= 0:
                raise ValueError(f"price {name} must be a non-negative number, got {value!r}")
        for model, value in self.per_gpu_hour.items():
            if not value >= 0:
                raise ValueError(f"price per GPU-hour of {model} must be a non-negative number, got {value!r}")

    def gpu_hour(self, model: str) -> float:
        """$/GPU-hour of a model (a table key or a GPU's full name)."""
        if self.override_per_gpu_hour is not None:
            return self.override_per_gpu_hour
        key = gpu_model_key(model)
        return float(self.per_gpu_hour.get(key, FALLBACK_PER_GPU_HOUR))

    def dollars(self, gpu_seconds: float, model: str, energy_joules: float = 0.0) -> float:
        """The cost of ``gpu_seconds`` of lost compute, plus the energy wasted where $/kWh is set."""
        cost = gpu_seconds / 3600.0 * self.gpu_hour(model)
        if self.per_kwh is not None:
            cost += energy_joules / 3.6e6 * self.per_kwh
        return cost
