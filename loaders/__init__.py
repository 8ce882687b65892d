"""Read side of Phase Zoo: datasets of stored checkpoints, models back from them, averaging."""

from loaders.augmentation import Augment
from loaders.averaging import align, average, interpolate, recondition_batchnorm
from loaders.batching import LayoutBatchSampler, pad_collate
from loaders.dataset import ZooDataset
from loaders.models import groups, load_model, pairs
from loaders.streaming import StreamLoader, ZooStream

__all__ = ["Augment", "LayoutBatchSampler", "StreamLoader", "ZooDataset", "ZooStream", "align",
           "average", "groups", "interpolate", "load_model", "pad_collate", "pairs",
           "recondition_batchnorm"]
