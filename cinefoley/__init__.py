"""cinefoley: spotlighting partially visible cinematic language for video-to-audio generation.

A re-implementation of Huang et al., "Spotlighting Partially Visible Cinematic Language for
Video-to-Audio Generation via Self-distillation", on top of Diff-Foley. A video encoder E gives per-frame
features c = E(x_v); a generator G turns them into sound. Close-ups and camera moves hide part of the
sounding object and spoil E's features; the paper retrains E only, as a student that gives for a varied
clip what the frozen teacher gives for the full clip.

Where each step of the paper lives:

============================  ==========================================================================
``variations``                §3.2 — the close-up f_cu, the camera move f_cm, the proportion k
``testsets``                  §4 — the deterministic CU / CM test sets (the paper's VGG-CU, VGG-CM)
``distill``                   §3.3 — the self-distillation loss L_p (Eq. 2) and the one training loop
``generate``                  §3.4 — classifier-free guidance (Eq. 4) and DPM-Solver++ sampling
``metrics``                   §4 — FAD, FD, KID, KL, IS, Align Acc with bootstrap intervals; Tables 1, 3, 4
``explain``                   Figure 6 — Grad-CAM of the encoders and the attention on the sounding object
``study``                     Table 2 — the blinded A/B listening study
``foley``                     the method on your own videos (``cinefoley foley``); ``metrics.folders``
                              scores any two folders of audio (``cinefoley evaluate``)
============================  ==========================================================================

The pipeline runs in two worlds behind one interface, :class:`cinefoley.worlds.World`, opened with
:func:`cinefoley.worlds.open_world`: ``worlds.cinetoy`` (a procedural world the package renders, with
small models it trains itself; runs on a laptop CPU) and ``worlds.vggsound`` (the real tier: VGGSound
videos and Diff-Foley's released checkpoints). The networks are in ``models`` (the real ones beside their
checkpoint loading, CineToy's stand-ins in ``models.cinetoy``); reading and writing video and audio, the
mel front end and the vocoder are in ``media``. The notebooks (``notebooks/01_…07_``) tell the story one
step each, with the same cells in both worlds; ``reproduce`` runs them headlessly.
"""

__version__ = "0.1.0"
