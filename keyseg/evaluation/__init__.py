"""Evaluation: scoring predicted masks and showing people where a model goes wrong.

`keyseg.evaluation.gallery` renders the best and worst predictions as an offline HTML page.
"""
