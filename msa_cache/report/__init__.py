"""`msa-cache report`: one self-contained HTML page about a manifest's finished runs (build.py)."""
REPORT_FILE = "report.html"  # written in the runs folder unless -o says otherwise

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
_LAZY = {
    "build_report": "msa_cache.report.build",
    "write_report": "msa_cache.report.build",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REPORT_FILE", "build_report", "write_report"]
