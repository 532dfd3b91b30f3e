"""The torch layer: noise structures, per-example statistics, curvature, models and the
training loop ``covnoise.core.train.run(config, emit)``."""
