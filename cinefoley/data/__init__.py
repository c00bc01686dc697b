"""Data: manifests, the CineToy world, clip loading and test sets."""
