"""CineToy, the built-in world: ``render`` draws its clips (shapes, colours, textures that flash when
their sound plays), ``world`` is :class:`~cinefoley.worlds.cinetoy.world.CineToyWorld`, which holds the
clips in memory and trains (or loads the shipped) stand-in models."""
