"""What a run reads: the datasets' registry and readers, TFRecord shards, tf.data pipelines."""
