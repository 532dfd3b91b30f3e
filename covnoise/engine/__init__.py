"""Engines that run training configs somewhere: a local process pool or a Ray cluster."""
