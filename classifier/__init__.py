"""Prompt embedding and ONNX difficulty scoring, shared by serving and training."""
