"""`odecli export`: a trained model as an ONNX or torch.export file, checked as written."""
