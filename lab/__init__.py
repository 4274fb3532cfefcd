"""lab: a Keras/TensorFlow kit for deep-learning coursework experiments.

Modules, one concern each:
    lab.datasets   one registry of datasets (MedMNIST, Keras, TFDS, folders, embedded)
    lab.pipeline   tf.data pipelines and augmentation
    lab.tfrecord   sharded TFRecord export and streaming reads
    lab.models     model builders (simple, basic, cnn, mlp)
    lab.config     the flat run configuration
    lab.training   ``train(config)``: one run, one record
    lab.callbacks  epoch log line, timer, divergence monitor
    lab.records    run folders, the run index, results tables
    lab.evaluation accuracy, macro AUC, confusion matrices
    lab.plots      learning curves, confusion matrices, sample grids
    lab.sweep      run many configurations; a diverged run never stops a sweep
    lab.ablation   E1's regularisation ablation as one command
    lab.batch      papermill batches of a notebook, resumable after a kill
    lab.notebooks  canonical notebook JSON, nbval copies, recorded expected outputs
    lab.numpy_mlp  E10's MLP in NumPy with hand-written backpropagation
    lab.hardware   tf.distribute strategies and mixed precision (off by default)
    lab.distributed  one training run on several machines (MultiWorkerMirroredStrategy)
    lab.tuning     keras-tuner searches whose trials are run records; chief/worker tuning
    lab.tf_memory  freeing a finished run's traced graphs (flat memory over many runs)
    lab.segmentation  U-Net/DeepLab/FCN, autoencoders, Dice and IoU, ``train_segmentation``
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) drowns notebook output and logs;
# warnings and errors still show. Set TF_CPP_MIN_LOG_LEVEL yourself to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
