"""The data layer: dataset sources and their array cache, corruption, and preprocessing.

Data flows source -> cache -> corruption -> preprocessing, as plain tensors.
"""

from rethink.data import packed  # noqa: F401 (registers the packed: source with the registry)
from rethink.data.sources import (
    RawDataset,
    check_data_dir,
    list_sources,
    load_dataset,
    resolve_cache_dir,
    resolve_data_dir,
)

__all__ = [
    "RawDataset",
    "check_data_dir",
    "list_sources",
    "load_dataset",
    "resolve_cache_dir",
    "resolve_data_dir",
]
