"""The input pipeline: RLDS -> standardize -> trajectory transforms -> frames -> batches.

`octo_like/schema.py` documents the keys, shapes and dtypes at every stage;
`pipeline.make_pipeline` is the entry point.
"""
