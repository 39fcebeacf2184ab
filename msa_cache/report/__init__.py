"""`msa-cache report`: one self-contained HTML page about a manifest's finished runs (build.py)."""
from msa_cache.lazy import lazy_getattr

REPORT_FILE = "report.html"  # written in the runs folder unless -o says otherwise

# Imported on first use (PEP 562), so the light names above load without torch (`--help`, option checks).
__getattr__ = lazy_getattr(__name__, {
    "build_report": "msa_cache.report.build",
    "write_report": "msa_cache.report.build",
})


__all__ = ["REPORT_FILE", "build_report", "write_report"]
