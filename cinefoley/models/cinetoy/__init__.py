"""CineToy's stand-ins for the real networks, small enough to train on a 2-core CPU: the teacher and
its CAVP-style pretraining (``encoders``, ``pretrain``), the generator G (``generator``, with its first
stage in ``first_stage``) and the three referees (``referees``)."""
