"""Fuzz targets and their runner: see fuzz/run.py."""
