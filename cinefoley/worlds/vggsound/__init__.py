"""The real tier: VGGSound and Diff-Foley's checkpoints. ``manifest`` indexes the videos you have,
``testsets`` places VGG-CU / VGG-CM on them, ``features`` extracts CAVP features once per clip,
``stream`` feeds the distillation from the videos, ``world`` is
:class:`~cinefoley.worlds.vggsound.world.VGGSoundWorld`, ``cli`` the ``cinefoley vggsound`` commands."""
