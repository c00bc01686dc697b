"""The networks. The real ones sit at this level, each beside its checkpoint loading, every key
checked (:mod:`~cinefoley.models.checkpoints`): CAVP's video encoder (``cavp``), Diff-Foley's LDM
(``ldm``, with its conditioning embedder in ``conditioning``), Diff-Foley's eval classifier
(``align_classifier``), PANNs Cnn14 (``panns``) and VGGish (``vggish``). CineToy's small stand-ins,
trained by the package itself, are in :mod:`cinefoley.models.cinetoy`."""
