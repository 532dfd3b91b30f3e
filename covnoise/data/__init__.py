"""Data sets: the registry (sizes, shapes, classes, required files), the embedded sets
(generated or shipped), the readers of file-backed sets and their downloads.

Every loader returns a :class:`Dataset` of tensors with a JSON-serialisable record of how it
was made; files a user supplies are read without executing code (``restricted_pickle``).
"""

from covnoise.data.datasets import (
    CIFAR10_FOLDER,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    DATA_DIR_ENV,
    DATASETS,
    IDX_FILES,
    REMOTE_SOURCES,
    Dataset,
    DatasetError,
    DatasetSpec,
    canonical_name,
    default_data_dir,
    download,
    load_dataset,
    make_mnist1d,
    mnist1d_arrays,
    mnist1d_cache_path,
    mnist1d_templates,
    read_cifar_batch,
    read_idx,
    resolve_options,
    teacher_logits,
    teacher_network,
)

__all__ = [
    "CIFAR10_FOLDER",
    "CIFAR10_TEST_BATCH",
    "CIFAR10_TRAIN_BATCHES",
    "DATASETS",
    "DATA_DIR_ENV",
    "IDX_FILES",
    "REMOTE_SOURCES",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "canonical_name",
    "default_data_dir",
    "download",
    "load_dataset",
    "make_mnist1d",
    "mnist1d_arrays",
    "mnist1d_cache_path",
    "mnist1d_templates",
    "read_cifar_batch",
    "read_idx",
    "resolve_options",
    "teacher_logits",
    "teacher_network",
]
