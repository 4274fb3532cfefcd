"""lab: a Keras/TensorFlow kit for deep-learning coursework experiments.

One folder per room; a room imports only from the rooms listed below it (tests/test_imports.py),
so a change in a room can break only the rooms above it:

    lab.report    reports (HTML and Markdown) of a batch, sweep, search or set of runs
    lab.studies   groups of runs and what runs them: sweeps, papermill batches, the E1 ablation,
                  seeds, keras-tuner searches, E2/E8's transfer studies, notebooks, clusters
    lab.tasks     the tasks' plug-ins: classification, segmentation and reconstruction, instance
                  segmentation (an optional extra), and backbones pretrained offline
    lab.runs      the life of one run and its record: lab.runs.training.run (``lab.run``), the
                  runner, callbacks, records, scores, figures, TensorBoard, intervals and comparisons
    lab.models    the model builders, one module per family; losses, the frozen-feature cache,
                  E10's NumPy MLP
    lab.data      what a run reads: the datasets' registry and readers, TFRecord shards, tf.data
    lab.system    files, folders, downloads, devices, TensorFlow's logging and memory, Colab
    lab.config    what a run is, checked and hashed, without TensorFlow: the flat run
                  configurations, optimizers and learning-rate schedules by name, and the two
                  registries they check names against, lab.tasks.TASKS and lab.models.MODELS
                  (each its package's ``__init__``, which imports no module of its package)

docs/architecture.md draws them, module by module, with a reading order for a newcomer. The
experiments the kit exists for (E1-E12) are described in docs/experiments.md.
"""

from lab.system import tf_logging

# TensorFlow's C++ start-up lines (absl's pre-initialisation banner, oneDNN and CUDA notices, cuInit
# on a machine without a GPU) drown notebook outputs and batch logs: TF_CPP_MIN_LOG_LEVEL=3 unless
# set, and the lines of the first TensorFlow import filtered by that level (lab/system/tf_logging.py).
# Python warnings and errors still show; set TF_CPP_MIN_LOG_LEVEL=0 to see every line.
tf_logging.install()

__version__ = "0.1.0"


def run(config=None, **options):
    """Trains one model of any task and writes its run record: ``lab.runs.training.run`` (imported
    when called, so that ``import lab.config`` loads no TensorFlow)."""
    from lab.runs.training import run as run_any

    return run_any(config, **options)
