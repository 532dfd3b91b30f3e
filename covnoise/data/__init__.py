"""Data sets: the registry (sizes, shapes, classes, required files), the embedded sets
(generated or shipped), the readers of file-backed sets and their downloads.

Every loader returns a :class:`Dataset` of tensors with a JSON-serialisable record of how it
was made; files a user supplies are read without executing code (``restricted_pickle``, or
no pickle at all for CIFAR-10's binary version).

Modules, lowest first: ``dataset`` (container, error), ``options`` and ``registry`` (what
exists, defaults, validation), ``layout`` (file names under ``data_dir``, missing files),
``normalise`` and ``prepared`` (shared loader steps), one module per source (``digits``,
``teacher``, ``mnist1d``, ``mnist5k``, ``idx``, ``cifar``), then ``load``
(:func:`load_dataset`) and ``download``.
"""

from covnoise.data.cifar import CIFAR10_CLASSES, read_cifar_batch, read_cifar_bin
from covnoise.data.dataset import Dataset, DatasetError
from covnoise.data.download import REMOTE_SOURCES, REMOTE_VARIANTS, download
from covnoise.data.idx import read_idx
from covnoise.data.layout import (
    CIFAR10_BIN_FOLDER,
    CIFAR10_BIN_TEST_BATCH,
    CIFAR10_BIN_TRAIN_BATCHES,
    CIFAR10_FOLDER,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    IDX_FILES,
    missing_files,
)
from covnoise.data.load import load_dataset
from covnoise.data.mnist1d import (
    make_mnist1d,
    mnist1d_arrays,
    mnist1d_cache_path,
    mnist1d_templates,
)
from covnoise.data.mnist5k import (
    mnist5k_arrays,
    mnist5k_cache_path,
    mnist5k_source,
    mnist5k_split,
)
from covnoise.data.registry import (
    DATA_DIR_ENV,
    DATASETS,
    DatasetSpec,
    canonical_name,
    default_data_dir,
    input_shape,
    num_classes,
    resolve_options,
    train_size,
)
from covnoise.data.teacher import teacher_logits, teacher_network

__all__ = [
    "input_shape",
    "num_classes",
    "train_size",
    "CIFAR10_BIN_FOLDER",
    "CIFAR10_BIN_TEST_BATCH",
    "CIFAR10_BIN_TRAIN_BATCHES",
    "CIFAR10_CLASSES",
    "CIFAR10_FOLDER",
    "CIFAR10_TEST_BATCH",
    "CIFAR10_TRAIN_BATCHES",
    "DATASETS",
    "DATA_DIR_ENV",
    "IDX_FILES",
    "REMOTE_SOURCES",
    "REMOTE_VARIANTS",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "canonical_name",
    "default_data_dir",
    "download",
    "load_dataset",
    "make_mnist1d",
    "missing_files",
    "mnist1d_arrays",
    "mnist1d_cache_path",
    "mnist1d_templates",
    "mnist5k_arrays",
    "mnist5k_cache_path",
    "mnist5k_source",
    "mnist5k_split",
    "read_cifar_batch",
    "read_cifar_bin",
    "read_idx",
    "resolve_options",
    "teacher_logits",
    "teacher_network",
]
