"""Sharded TFRecord export and streaming reads of image-classification data.

An exported directory holds, for each split, a manifest and the shards it lists:

    train.manifest.json                 shape, dtype, encoding, compression, class names, the
                                        content hash and provenance of the data, and each
                                        shard's file name, example count, byte size and sha256
    train-<export id>-00000.tfrecord    up to ``images_per_shard`` examples each, in order
    train-<export id>-00001.tfrecord    (``.tfrecord.gz`` / ``.tfrecord.zlib`` when compressed)

Each record is a ``tf.train.Example`` with the features ``image`` (raw bytes or PNG),
``height``, ``width``, ``channels``, ``dtype`` and an int64 ``label``. A whole-dataset export
(``export_dataset``, ``export_stream``) adds ``labels.npz`` and, last, ``dataset.json``.

The manifest is the commit point: shards are written to temporary files and renamed, the
manifest last, so nothing half-written is ever read and a failed export leaves the previous one
whole. Each manifest records what its shards were made from, which ``check_provenance`` and
``check_export`` compare with a run's data, and each shard's sha256, which the readers check.

Modules, each importing only those listed before it:
    manifest     the format: file names, options, each split's manifest (``read_manifest``)
    provenance   fingerprints and content hashes, ``check_provenance``; each shard's size
                 and sha256 checked against its manifest entry
    writing      ``write_tfrecords_from_batches`` (the one writer, over a stream of batches),
                 ``write_tfrecords`` and ``export_dataset`` (arrays as such a stream):
                 shards, manifests and the atomic commit of ``dataset.json``
    reading      ``read_tfrecords``, ``verify_tfrecords``, ``make_tfrecord_pipeline``
    streamed     ``export_stream``, ``open_export``, ``check_export``, ``StreamedDataset``:
                 datasets larger than memory
Every public name is importable from ``lab.data.tfrecord`` itself.

Errors:
    FileNotFoundError: the manifest or a shard it lists is missing (names the file).
    tf.errors.DataLossError: a shard whose size or sha256 differs from its manifest entry
        (truncated, replaced or damaged in place), raised by ``read_tfrecords`` and
        ``make_tfrecord_pipeline`` themselves and naming the shard.
    ValueError: from ``check_provenance``, shards exported from other data than the run's.
"""

from lab.data.tfrecord.manifest import (
    COMPRESSIONS, DATASET_FILE, ENCODINGS, MANIFEST_SUFFIX, RAW_DTYPES, manifest_path, read_manifest,
)
from lab.data.tfrecord.provenance import check_provenance, dataset_fingerprint, is_default_fingerprint
from lab.data.tfrecord.writing import DEFAULT_IMAGES_PER_SHARD, export_dataset, write_tfrecords, write_tfrecords_from_batches
from lab.data.tfrecord.reading import make_tfrecord_pipeline, read_tfrecords, verify_tfrecords
from lab.data.tfrecord.streamed import StreamedDataset, check_export, export_stream, open_export

# RAW_DTYPES and DEFAULT_IMAGES_PER_SHARD are importable from here too, as before the split, but
# stay out of __all__ as they always did.
__all__ = [
    "COMPRESSIONS", "DATASET_FILE", "ENCODINGS", "MANIFEST_SUFFIX", "StreamedDataset", "check_export",
    "check_provenance", "dataset_fingerprint", "export_dataset", "is_default_fingerprint", "export_stream", "make_tfrecord_pipeline",
    "manifest_path", "open_export", "read_manifest", "read_tfrecords", "verify_tfrecords", "write_tfrecords",
    "write_tfrecords_from_batches",
]
