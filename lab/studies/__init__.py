"""Groups of runs and what runs them: sweeps, batches, the ablation, seeds, searches, notebooks."""
