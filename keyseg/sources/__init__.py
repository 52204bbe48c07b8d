"""Raw data sets to prepared records: one module per source family.

Each module finds the items of a split (`discover_*`) and converts one item
(`convert_*`) into a `PreparedImage`: manifest fields, one mask per target and the
issues found. No file is written here; `keyseg prepare` does the writing.
"""
