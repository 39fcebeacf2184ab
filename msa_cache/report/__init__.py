"""`msa-cache report`: one self-contained HTML page about a manifest's finished runs (build.py)."""
from msa_cache.report.build import REPORT_FILE, build_report, write_report

__all__ = ["REPORT_FILE", "build_report", "write_report"]
