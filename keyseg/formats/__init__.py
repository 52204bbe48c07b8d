"""Readers and writers of the on-disk formats: LabelMe JSON, REFER, our manifests."""
