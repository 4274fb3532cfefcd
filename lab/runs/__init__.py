"""The life of one run and its record: the runner, its callbacks, records, scores, figures, TensorBoard, intervals and comparisons."""
