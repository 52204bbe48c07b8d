"""WebDataset shards: the sample format, a deterministic tar writer, readers and checks."""
