"""Shared test helpers: synthetic sections, images and 10x-format folders (one place for each)."""
