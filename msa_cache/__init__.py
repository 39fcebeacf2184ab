"""msa-cache: multimodal sentiment analysis on cached frozen-encoder features.

Pipeline (one subpackage per stage):
    manifest -> extract (encoders) -> cache -> heads -> runs
"""
__version__ = "0.1.0"
