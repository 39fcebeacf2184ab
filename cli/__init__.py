"""msa-cache command line: a thin click layer over the msa_cache API."""
