"""Training pipeline (`presage train`). Heavy imports (scikit-learn, lightgbm, skl2onnx) live here only."""
