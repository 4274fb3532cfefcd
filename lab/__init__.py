"""lab: a Keras/TensorFlow kit for deep-learning coursework experiments.

Modules, one concern each:
    lab.datasets   one registry of datasets (MedMNIST, Keras, TFDS, folders, embedded); the data a
                   run's configuration names (load_data, data_key)
    lab.pipeline   tf.data pipelines and augmentation
    lab.tfrecord   sharded TFRecord export and streaming reads
    lab.models     one registry of every model builder (classifiers, segmentation, autoencoders)
    lab.tasks      one registry of the tasks (classification, segmentation, reconstruction,
                   instance): each one's configuration, runner plug-in, monitors, columns, figures
    lab.config     the flat run configurations (RunConfig, SegmentationConfig, InstanceConfig)
    lab.runner     the life of every run: fit, best weights, evaluation, record or discard
    lab.classification  what a classification run adds to the runner
    lab.training   ``run(config)``: one run of any task, one record (``lab.run``); ``train``
    lab.optimizers optimizers by name; a smaller learning rate for a pretrained backbone
    lab.pretraining  backbones pretrained offline (``weights="pretrain-offline"``)
    lab.transfer_studies  E2's unfreezing comparison, E8's efficiency table
    lab.callbacks  epoch log line, timer, divergence monitor, best weights
    lab.records    run folders, the run index and its lookup, results tables; collections read back
    lab.collection the one record of a sweep, batch, search or ablation (collection.json): format, writer
    lab.evaluation scores from saved predictions (classification and segmentation)
    lab.plots      learning curves, confusion matrices, sample grids, masks
    lab.sweep      run many configurations; a stalled or diverged run never stops a sweep
    lab.ablation   E1's regularisation ablation as one command
    lab.batch      papermill batches of a notebook, resumable after a kill
    lab.seeds      ``seeds``: each configuration of a group of runs once per seed
    lab.notebooks  canonical notebook JSON, nbval copies, recorded expected outputs
    lab.progress   progress bars (tqdm) for downloads, features, TFRecord export, batches
    lab.tf_logging TensorFlow's C++ start-up lines kept out of notebooks and logs
    lab.numpy_mlp  E10's MLP in NumPy with hand-written backpropagation
    lab.hardware   tf.distribute strategies and mixed precision (off by default; "auto" by the GPU)
    lab.colab      Colab as home: runs and downloads on Google Drive, the device report
    lab.distributed  one training run on several machines (MultiWorkerMirroredStrategy)
    lab.tuning     keras-tuner searches whose trials are run records; chief/worker tuning
    lab.tf_memory  freeing a finished run's traced graphs (flat memory over many runs)
    lab.segmentation  ``train_segmentation``, ``train_autoencoder``: Dice losses, IoU metrics
    lab.instance   E7: ``train_instance``, Model Garden's Mask R-CNN (an optional extra), COCO AP
The experiments the kit exists for (E1-E12) are described in docs/experiments.md.
"""

from lab import tf_logging

# TensorFlow's C++ start-up lines (absl's pre-initialisation banner, oneDNN and CUDA notices, cuInit
# on a machine without a GPU) drown notebook outputs and batch logs: TF_CPP_MIN_LOG_LEVEL=3 unless
# set, and the lines of the first TensorFlow import filtered by that level (lab/tf_logging.py).
# Python warnings and errors still show; set TF_CPP_MIN_LOG_LEVEL=0 to see every line.
tf_logging.install()

__version__ = "0.1.0"


def run(config=None, **options):
    """Trains one model of any task and writes its run record: ``lab.training.run`` (imported
    when called, so that ``import lab.config`` loads no TensorFlow)."""
    from lab.training import run as run_any

    return run_any(config, **options)
