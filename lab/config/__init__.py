"""The flat run configurations: the same values a notebook's ``parameters`` cell holds.

One configuration describes one run completely (data, model, optimiser, training, hardware,
record) and is saved beside the run's results. ``RunConfig`` is a classification run,
``SegmentationConfig`` a segmentation or autoencoder run, ``InstanceConfig`` an instance
segmentation run (the task registry, ``lab.tasks.TASKS``, says which class each task's runs
take, and a configuration's task is its model's); all extend ``BaseConfig``, which holds the fields every run has. Model
switches are flat fields too: those left at None take the model builder's default, and only
the ones a model has may be set. Each lives in its own module, and every name is importable
from here:

    lab.config.base            BaseConfig: the shared fields, keys, hash and value checks
    lab.config.classification  RunConfig
    lab.config.segmentation    SegmentationConfig
    lab.config.instance        InstanceConfig

Importing this package does not import TensorFlow: a batch or a search checks its
configurations before anything heavy is loaded. (Validating a model's options reads its
builder's signature, which imports that builder, and with it Keras.)

Size fields are named after where they act:

    dataset_size         the data as loaded: MedMNIST's 28/64/128/224 files, the side shapes are
                         generated at, the side a TFDS set or an image folder is resized to
    dataset_resize       an image folder only: the shorter side before a centre crop to
                         dataset_size (E11: 256, then 224)
    pipeline_size        resized in the tf.data pipeline (8x8 digits to 32x32; Mask R-CNN's square
                         input side, which Model Garden's parser resizes and pads to)
    backbone_input_size  resized inside a transfer model, before its backbone (28 to 224 px)

What trains is said one way, ``unfreeze``: 0 trains only the new head (a transfer model's head,
the new output layer of an ``init_from`` model, a ``pretrained_unet``'s decoder), n also the
backbone's last n stages, "all" everything. None leaves each model's default.
"""

from lab.config.base import (DISTRIBUTE, INPUT_SCALINGS, NOT_HASHED, RENAMED, RENAMED_IN_TASK, BaseConfig,
                             config_for, model_option, renamed_fields)
from lab.config.classification import DATA_PATHS, FEATURE_CACHES, TTA_MODES, RunConfig
from lab.config.instance import InstanceConfig
from lab.config.segmentation import RECONSTRUCTION_LOSSES, SEGMENTATION_LOSSES, SegmentationConfig

__all__ = ["BaseConfig", "InstanceConfig", "RENAMED", "RunConfig", "SegmentationConfig", "config_for"]
