"""Registered spaCy functions the titlecat pipelines need at load time.

Shipped inside every wheel with `spacy package --code`, so this module must be
self-contained: it imports spacy and thinc, never the rest of titlecat.
"""
