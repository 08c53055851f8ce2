"""Serving: the ONNX classifier, scoring, int8, the Triton repository, predict, the model card, champions."""
