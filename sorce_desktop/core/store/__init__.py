"""The store, the truth of a library: the catalog in SQLite (catalog), the vector file kept in step with it and
its approximate index (vectorfile, ann), the errors they raise (errors), and what repair reads and salvages from a
damaged library (repair, salvage)."""
