"""Dataset building, training, evaluation and ONNX export of the difficulty classifier."""
