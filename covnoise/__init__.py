"""covnoise: large-batch SGD with structured covariance noise (Wen et al., AISTATS 2020)."""

__version__ = "0.1.0"
