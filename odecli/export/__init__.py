"""`odecli export`: a trained model as an ONNX or torch.export file, checked as written.

The defaults live here (no torch import) so `odecli --help` shows them without loading torch.
"""

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
WHAT = {"train": ("trajectory", "field"), "classify": ("logits",)}
DEFAULT_SOLVER = "rk4"
DEFAULT_STEPS = 4        # fixed steps between consecutive output times
DEFAULT_TOLERANCE = 1e-4  # max absolute error against odecli's reference solve
