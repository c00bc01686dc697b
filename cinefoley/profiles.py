"""Run profiles: ``smoke`` (CI, minutes on 2 CPU cores), ``demo`` (the default CineToy
reproduction) and ``paper`` (the paper's settings, meant for a GPU).

A notebook's ``profile`` parameter picks one; every stage reads its settings from here, so the
three sizes are defined in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cinefoley.data.toyworld import WorldConfig


@dataclass(frozen=True)
class Profile:
    name: str
    world: WorldConfig = field(default_factory=WorldConfig)
    seed: int = 0


PROFILES = {
    "smoke": Profile("smoke", WorldConfig(n_train=96, n_val=24, n_test=32)),
    "demo": Profile("demo", WorldConfig(n_train=800, n_val=100, n_test=200)),
    "paper": Profile("paper", WorldConfig(n_train=4000, n_val=400, n_test=1000)),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
