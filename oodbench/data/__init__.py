"""Image lists (manifests), image loading and preprocessing, class names and prompt templates."""
