"""Datasets: one interaction table (``schema``), loaders of the published formats, named presets.

>>> from fedrec.data import load_dataset
>>> data = load_dataset("ml-1m")            # doctest: +SKIP  (needs the data root)
"""

from fedrec.data.loaders import ColumnMap, load_delimited
from fedrec.data.registry import PRESETS, load_dataset, resolve_data_root
from fedrec.data.schema import BEHAVIORS, COLUMNS, TRANSACTIONAL, Dataset, make_interactions

__all__ = [
    "BEHAVIORS", "COLUMNS", "PRESETS", "TRANSACTIONAL", "ColumnMap", "Dataset", "load_dataset",
    "load_delimited", "make_interactions", "resolve_data_root",
]
