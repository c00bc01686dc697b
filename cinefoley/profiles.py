"""Run profiles: ``smoke`` (CI, minutes on 2 CPU cores), ``demo`` (the default CineToy
reproduction) and ``paper`` (the paper's settings, meant for a GPU).

A notebook's ``profile`` parameter picks one; every stage reads its settings from here, so the
three sizes are defined in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cinefoley.data.toyworld import WorldConfig


@dataclass(frozen=True)
class StageSettings:
    pretrain_epochs: int = 15  # teacher T: CAVP-style contrastive pretraining on full frames
    generator_steps: int = 1500  # generator G: diffusion training steps
    evaluator_epochs: int = 15  # the three evaluation networks
    distill_epochs: int = 25  # self-distillation (paper: 25)
    samples_per_clip: int = 10  # generated sounds per test video, Table 1's systems (paper: 10)
    ablation_samples_per_clip: int = 10  # the same for the students of Tables 3 and 4
    diffusion_steps: int = 25  # DPM-Solver++ steps (paper: 25)
    n_boot: int = 1000  # bootstrap resamples for every interval
    ablations: bool = True  # train the Table 3 / Table 4 variants too


@dataclass(frozen=True)
class Profile:
    name: str
    world: WorldConfig = field(default_factory=WorldConfig)
    stages: StageSettings = field(default_factory=StageSettings)
    seed: int = 0


PROFILES = {
    "smoke": Profile("smoke", WorldConfig(n_train=96, n_val=24, n_test=32),
                     StageSettings(pretrain_epochs=2, generator_steps=20, evaluator_epochs=2, distill_epochs=1,
                                   samples_per_clip=1, ablation_samples_per_clip=1, diffusion_steps=4, n_boot=20)),
    "demo": Profile("demo", WorldConfig(n_train=600, n_val=60, n_test=120),
                    StageSettings(pretrain_epochs=15, generator_steps=1500, evaluator_epochs=15, distill_epochs=25,
                                  samples_per_clip=3, ablation_samples_per_clip=1, diffusion_steps=25, n_boot=100)),
    "paper": Profile("paper", WorldConfig(n_train=4000, n_val=400, n_test=1000), StageSettings()),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
