"""llmaaa: an LLM active annotator for NER inside Label Studio (LLMaAA, Zhang et al. 2023)."""

__version__ = "0.1.0"
