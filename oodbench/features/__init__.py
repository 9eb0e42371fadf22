"""Feature extraction and the content-addressed cache (text embeddings, image features, scores)."""
