"""Presage predictor runtime: model bundles, the ONNX `Scorer`, OOD guard and the training pipeline."""
