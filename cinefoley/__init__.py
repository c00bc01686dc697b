"""cinefoley: spotlighting partially visible cinematic language for video-to-audio generation.

A re-implementation of Huang et al., "Spotlighting Partially Visible Cinematic Language for
Video-to-Audio Generation via Self-distillation", on top of Diff-Foley, with a built-in procedural
world (CineToy) in which every stage runs on a laptop CPU.
"""

__version__ = "0.1.0"
