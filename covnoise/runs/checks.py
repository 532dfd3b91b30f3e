"""Checks of a RunConfig against its data set, before anything runs or is stored.

RunConfig.validate knows the fields alone; what a run can afford also depends on the data
set: the batch and probe sizes and the total steps on its training-set size (after the
validation split), the model's parameter count on its input shape. Both come from the
data-set registry (covnoise.data.train_size, input_shape), without loading any data, and a
model built on torch's meta device (shapes only, no memory), so a config that cannot run is
refused with one line naming the field and the bound instead of failing in a worker or an
allocator.
"""

from __future__ import annotations

from covnoise.config import MAX_PARAMETERS, ConfigError, RunConfig
from covnoise.data import input_shape, num_classes, train_size
from covnoise.data.validation import validation_size


def training_size(config: RunConfig) -> int:
    """Examples the run trains on: the data set's training set less the validation split."""
    n = train_size(config.dataset, config.dataset_options)
    return n - validation_size(n, config.val_fraction)


def parameter_count(config: RunConfig) -> int:
    """Parameters of the config's model, counted on a model built on the meta device."""
    import torch

    from covnoise.core.models import build_model, count_parameters

    shape = input_shape(config.dataset, config.dataset_options)
    classes = num_classes(config.dataset, config.dataset_options)
    try:
        with torch.device("meta"):
            model = build_model(
                config.model,
                shape,
                classes,
                width=config.width,
                depth=config.depth,
                ghost_bn=config.ghost_bn,
            )
    except ValueError as exc:  # e.g. a cnn on flat inputs
        raise ConfigError("model", str(exc).removeprefix("model: ")) from None
    return count_parameters(model)


def check_runnable(config: RunConfig) -> None:
    """Raise ConfigError if `config` cannot run on its data set: batch, probe and total steps
    against the training-set size, and the model's parameters against MAX_PARAMETERS."""
    config.validate(n_train=training_size(config))
    n_params = parameter_count(config)
    if n_params > MAX_PARAMETERS:
        raise ConfigError(
            "width",
            f"a {config.model} of width {config.width} and depth {config.depth} on "
            f"{config.dataset} has {n_params:.3g} parameters; allowed: at most "
            f"{MAX_PARAMETERS:.0e} (lower width or depth)",
        )
