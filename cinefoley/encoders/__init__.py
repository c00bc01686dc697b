"""Video encoders E of the V2A pipeline: the real CAVP (``cavp``) and CineToy's small stand-in (``toy``)."""
