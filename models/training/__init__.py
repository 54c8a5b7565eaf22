"""Training pipeline for the fault predictor (needs the `train` extra; the cabinet never imports it)."""
