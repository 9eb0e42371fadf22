"""Few-shot sampling and the shared trainer for trainable detectors."""
