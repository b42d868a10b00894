"""Coverage-guided fuzz targets (atheris), their seed corpora, and the short CI run of each."""
