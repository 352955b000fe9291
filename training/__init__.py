"""Training, evaluation and ONNX export of OncoNode's classifiers (the ``[train]`` extra).

Never imported by the node: it needs torch, which the node does not install. The node and this
package meet only in ``onconode.inference.preprocess`` (shared pixel preparation) and in the
manifest written to ``models/``.
"""
