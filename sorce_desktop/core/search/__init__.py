"""Searching: a typed query parsed into what to match and its filters (query), the answer that ranks photos by
their best region and words (answer), the words read in photos (textsearch), and outlines tightened while the
results are looked at (refine)."""
