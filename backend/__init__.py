"""Label Studio ML backend: the LLM annotator, the labeling config and the Flask service."""
