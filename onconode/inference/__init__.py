"""Analysis: route → select series → volume → preprocess → slices → ONNX → Grad-CAM."""
