"""Toy world of oodbench: procedural images with captions and a small CLIP trained on them."""
