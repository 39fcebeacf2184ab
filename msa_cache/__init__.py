"""msa-cache: multimodal sentiment analysis on cached frozen-encoder features.

Pipeline (one subpackage per stage):
    manifest -> extract (encoders) -> cache -> heads -> train -> fit | finetune -> study

The Python API for notebooks (docs/python.md):

    import msa_cache
    model = msa_cache.load("runs/mvsa-single/late-.../seed-0")   # or a Hub repo id "USER/REPO"
    model.predict(["what a day!"], ["post.jpg"])

Names are imported on first use, so `import msa_cache` (and the CLI's start) stays light.
"""
__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "load": "msa_cache.predictor",
    "Predictor": "msa_cache.predictor",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'msa_cache' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
