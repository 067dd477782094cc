"""Typed data views: what each simulated device holds and what the cloud may read.

>>> from fedrec.views import SampleViewConfig, build_sample_view
>>> view = build_sample_view(dataset, SampleViewConfig(exposures=5))   # doctest: +SKIP
>>> view.device(0).samples.history.shape                               # doctest: +SKIP
"""

from fedrec.views.base import (
    CloudView,
    FederatedView,
    RecordingView,
    cloud_names,
    cloud_reads,
    reads_outside_cloud,
)
from fedrec.views.config import DEVICE, PARTS, PRE, TEST, VALID, SampleViewConfig, Windows
from fedrec.views.features import ItemSide, Profiles
from fedrec.views.samples import (
    EXPOSURE,
    NEGATIVE,
    POSITIVE,
    DeviceSamples,
    EvalSet,
    SampleCloud,
    Samples,
    SampleView,
    build_sample_view,
    prepare_samples,
    resample_negatives,
)

__all__ = [
    "DEVICE", "EXPOSURE", "NEGATIVE", "PARTS", "POSITIVE", "PRE", "TEST", "VALID", "CloudView",
    "DeviceSamples", "EvalSet", "FederatedView", "ItemSide", "Profiles", "RecordingView",
    "SampleCloud", "SampleView", "SampleViewConfig", "Samples", "Windows", "build_sample_view",
    "cloud_names", "cloud_reads", "prepare_samples", "reads_outside_cloud", "resample_negatives",
]
